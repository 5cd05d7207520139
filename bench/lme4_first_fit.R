# lme4's first answer, for bench/bench_first_fit.py: in this fresh R process, the time to load lme4,
# then each model's first lmer/glmer call (R compiles nothing, but the first call loads and warms
# lme4's code) and a second call of the same model; then bootMer on sleepstudy (use.u = FALSE, ML),
# per replicate.
#
# Run from the repository root (bench_first_fit.py does, after writing the kb07-size data):
#     Rscript bench/lme4_first_fit.R <kb07.csv> [bootmer nsim, default 300]
# Writes bench/results/lme4_first_fit.json.

start <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
load_s <- proc.time()[["elapsed"]] - start
suppressPackageStartupMessages(library(jsonlite))

args <- commandArgs(trailingOnly = TRUE)
kb07_csv <- args[1]
nsim <- if (length(args) >= 2) as.integer(args[2]) else 300L

load_data <- function(path, factors) {
  d <- read.csv(path, stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

sleep <- load_data("jaxmm/data/sleepstudy.csv", "subj")
kb07 <- load_data(kb07_csv, c("subj", "item"))
cbpp <- load_data("jaxmm/data/cbpp.csv", c("herd", "period"))
grouse <- load_data("jaxmm/data/grouseticks.csv", c("index", "brood", "year", "location"))

fits <- list(
  sleepstudy = function() lmer(reaction ~ 1 + days + (1 + days | subj), sleep, REML = FALSE),
  kb07 = function() {
    lmer(rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load | subj) + (1 + spkr + prec + load | item),
         kb07, REML = FALSE)
  },
  cbpp = function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial),
  grouseticks = function() {
    glmer(ticks ~ 1 + year + cheight + (1 | index) + (1 | brood) + (1 | location), grouse, family = poisson)
  }
)

out <- list(library_load_s = load_s)
for (name in names(fits)) {
  first <- system.time(m <- suppressWarnings(suppressMessages(fits[[name]]())))[["elapsed"]]
  second <- system.time(suppressWarnings(suppressMessages(fits[[name]]())))[["elapsed"]]
  out[[name]] <- list(first_s = first, second_s = second, deviance = deviance(m))
  cat(sprintf("%s: first %.3f s, second %.3f s\n", name, first, second))
}

boot_fun <- function(fit) c(deviance = deviance(fit), fixef(fit), sigma = sigma(fit), getME(fit, "theta"))
m <- fits$sleepstudy()
elapsed <- system.time(bootMer(m, boot_fun, nsim = nsim, seed = 42L, use.u = FALSE))[["elapsed"]]
out$bootmer_sleepstudy <- list(nsim = nsim, seconds = elapsed, ms_per_replicate = 1000 * elapsed / nsim)
cat(sprintf("bootMer sleepstudy: %d replicates in %.2f s (%.2f ms each)\n", nsim, elapsed, 1000 * elapsed / nsim))
out$R <- R.version.string
out$lme4 <- as.character(packageVersion("lme4"))

dir.create("bench/results", showWarnings = FALSE, recursive = TRUE)
write_json(out, "bench/results/lme4_first_fit.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
