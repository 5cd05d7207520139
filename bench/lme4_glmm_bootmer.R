# Parametric bootstrap timing of generalized linear mixed models with lme4::bootMer
# (type = "parametric", use.u = FALSE), Laplace fits (nAGQ = 1, glmer's defaults):
#   cbpp:    incidence/size ~ 1 + period + (1|herd), weights = size (binomial)
#   verbagg: r2 ~ 1 + anger + gender + btype + situ + (1|id) + (1|item) (bernoulli)
# Each replicate returns c(objective = -2 logLik, fixef, theta), jaxmm's obj, β.., θ.. columns.
#
# Run from the repository root (nsim defaults to 500 for cbpp, 200 for verbagg):
#     Rscript bench/lme4_glmm_bootmer.R [nsim_cbpp] [nsim_verbagg]
# Writes bench/results/lme4_glmm_bootmer.json (per model: nsim, fit time, bootstrap time) and
# the replicate tables bench/results/lme4_glmm_bootmer_<model>.csv.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
nsim <- c(cbpp = 500L, verbagg = 200L)
if (length(args) >= 1) nsim[["cbpp"]] <- as.integer(args[1])
if (length(args) >= 2) nsim[["verbagg"]] <- as.integer(args[2])
seed <- 42L

load_data <- function(name, factors) {
  d <- read.csv(file.path("jaxmm/data", name), stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
cbpp <- load_data("cbpp.csv", c("herd", "period"))
verbagg <- load_data("verbagg.csv", c("gender", "item", "id", "btype", "situ", "mode"))
verbagg$r2 <- as.numeric(verbagg$r2 == "Y")

fits <- list(
  cbpp = function() glmer(incidence / size ~ 1 + period + (1 | herd), family = binomial,
                          weights = size, data = cbpp),
  verbagg = function() glmer(r2 ~ 1 + anger + gender + btype + situ + (1 | id) + (1 | item),
                             family = binomial, data = verbagg)
)

boot_fun <- function(fit) {
  c(objective = -2 * as.numeric(logLik(fit)), fixef(fit), getME(fit, "theta"))
}

dir.create("bench/results", showWarnings = FALSE, recursive = TRUE)
results <- list()
for (name in names(fits)) {
  fit_s <- system.time(m <- fits[[name]]())[["elapsed"]]
  elapsed <- system.time(
    b <- suppressWarnings(suppressMessages(
      bootMer(m, boot_fun, nsim = nsim[[name]], type = "parametric", use.u = FALSE, seed = seed)))
  )[["elapsed"]]
  tab <- as.data.frame(b$t, check.names = FALSE)
  write.csv(tab, sprintf("bench/results/lme4_glmm_bootmer_%s.csv", name), row.names = FALSE)
  results[[name]] <- list(
    formula = deparse(formula(m)), nsim = nsim[[name]], seed = seed, fit_seconds = fit_s,
    seconds_total = elapsed, seconds_per_replicate = elapsed / nsim[[name]],
    n_failed = sum(!complete.cases(tab)), estimate = as.list(boot_fun(m))
  )
  cat(sprintf("%-8s nsim=%d  fit %.2f s  bootstrap %.2f s  %.5f s/replicate\n",
              name, nsim[[name]], fit_s, elapsed, elapsed / nsim[[name]]))
}
results[["_meta"]] <- list(
  call = "bootMer(m, FUN, nsim, type = 'parametric', use.u = FALSE, seed)",
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  loadavg_before = readLines("/proc/loadavg"),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")
)
write_json(results, "bench/results/lme4_glmm_bootmer.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
cat("wrote bench/results/lme4_glmm_bootmer.json\n")
