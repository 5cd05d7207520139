# Parametric bootstrap timing with lme4::bootMer (use.u = FALSE) for insteval (bench/bench_insteval_bootstrap.py runs it):
#   y ~ 1 + service + (1|s) + (1|d) + (1|dept)   (ML, 73,421 rows)
# Each replicate returns c(deviance, fixef, theta); the lmer fit itself is timed apart, untimed in the bootstrap.
#
#     Rscript bench/lme4_bootmer_insteval.R [nsim] [out.json]
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
nsim <- if (length(args) >= 1) as.integer(args[1]) else 8L
out <- if (length(args) >= 2) args[2] else "bench/results/lme4_bootmer_insteval.json"

d <- read.csv(gzfile("jaxmm/data/insteval.csv.gz"), stringsAsFactors = FALSE)
for (f in c("s", "d", "dept", "service")) d[[f]] <- factor(d[[f]])
fit_s <- system.time(m <- lmer(y ~ 1 + service + (1|s) + (1|d) + (1|dept), data = d, REML = FALSE))[["elapsed"]]
boot_fun <- function(fit) c(deviance = deviance(fit), fixef(fit), getME(fit, "theta"))
elapsed <- system.time(
  b <- suppressWarnings(suppressMessages(bootMer(m, boot_fun, nsim = nsim, type = "parametric", use.u = FALSE,
                                                 seed = 42L)))
)[["elapsed"]]
result <- list(
  insteval = list(nsim = nsim, seconds = elapsed, ms_per_replicate = 1000 * elapsed / nsim, fit_s = fit_s,
                  deviance = deviance(m), theta = unname(getME(m, "theta")), replicates = unname(b$t)),
  `_meta` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")), date = format(Sys.time()),
                 load = unname(as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3])))
)
write_json(result, out, auto_unbox = TRUE, pretty = TRUE, digits = NA)
cat(sprintf("insteval bootMer: %d replicates in %.1f s, %.0f ms per replicate (fit %.1f s)\n", nsim, elapsed,
            1000 * elapsed / nsim, fit_s))
