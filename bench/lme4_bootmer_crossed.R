# Parametric bootstrap timing with lme4::bootMer (use.u = FALSE) for the crossed and nested LMMs and a
# GLMM (bench/bench_crossed.py runs it):
#   penicillin: diameter ~ 1 + (1|plate) + (1|sample)           (ML)
#   pastes:     strength ~ 1 + (1|batch/cask)                   (ML)
#   cbpp:       cbind(incidence, size - incidence) ~ period + (1|herd), binomial (Laplace)
#   kb07_maximal, kb07_zerocorr (with kb07.csv, bench/bench_ddf.py's simulated kb07-size data):
#               rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load | subj) + (same | item), and with ||  (ML)
# Each replicate returns c(deviance, fixef, theta).
#
#     Rscript bench/lme4_bootmer_crossed.R [nsim] [out.json] [kb07.csv] [kb07 nsim]
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
nsim <- if (length(args) >= 1) as.integer(args[1]) else 200L
out <- if (length(args) >= 2) args[2] else "bench/results/lme4_bootmer_crossed.json"

load_data <- function(name, factors) {
  d <- read.csv(file.path("jaxmm/data", name), stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
cbpp <- load_data("cbpp.csv", c("herd", "period"))
nsims <- list()
models <- list(
  penicillin = lmer(diameter ~ 1 + (1|plate) + (1|sample), REML = FALSE,
                    data = load_data("penicillin.csv", c("plate", "sample"))),
  pastes = lmer(strength ~ 1 + (1|batch/cask), REML = FALSE, data = load_data("pastes.csv", c("batch", "cask"))),
  cbpp = glmer(cbind(incidence, size - incidence) ~ period + (1|herd), family = binomial, data = cbpp)
)
if (length(args) >= 3) {
  kb07 <- read.csv(args[3], stringsAsFactors = TRUE)
  models$kb07_maximal <- lmer(rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load | subj) +
                                (1 + spkr + prec + load | item), REML = FALSE, data = kb07)
  models$kb07_zerocorr <- lmer(rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load || subj) +
                                 (1 + spkr + prec + load || item), REML = FALSE, data = kb07)
  nsims$kb07_maximal <- nsims$kb07_zerocorr <- if (length(args) >= 4) as.integer(args[4]) else 20L
}
boot_fun <- function(fit) c(deviance = deviance(fit), fixef(fit), getME(fit, "theta"))
results <- list()
for (name in names(models)) {
  n <- if (is.null(nsims[[name]])) nsim else nsims[[name]]
  elapsed <- system.time(
    b <- suppressWarnings(suppressMessages(bootMer(models[[name]], boot_fun, nsim = n, type = "parametric",
                                                   use.u = FALSE, seed = 42L)))
  )[["elapsed"]]
  results[[name]] <- list(nsim = n, seconds = elapsed, ms_per_replicate = 1000 * elapsed / n)
}
results[["_meta"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")), date = format(Sys.time()))
write_json(results, out, auto_unbox = TRUE, pretty = TRUE, digits = NA)
