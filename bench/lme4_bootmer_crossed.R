# Parametric bootstrap timing with lme4::bootMer (use.u = FALSE) for the crossed and nested LMMs and a
# GLMM (bench/bench_crossed.py runs it):
#   penicillin: diameter ~ 1 + (1|plate) + (1|sample)           (ML)
#   pastes:     strength ~ 1 + (1|batch/cask)                   (ML)
#   cbpp:       cbind(incidence, size - incidence) ~ period + (1|herd), binomial (Laplace)
# Each replicate returns c(deviance, fixef, theta).
#
#     Rscript bench/lme4_bootmer_crossed.R [nsim] [out.json]
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
models <- list(
  penicillin = lmer(diameter ~ 1 + (1|plate) + (1|sample), REML = FALSE,
                    data = load_data("penicillin.csv", c("plate", "sample"))),
  pastes = lmer(strength ~ 1 + (1|batch/cask), REML = FALSE, data = load_data("pastes.csv", c("batch", "cask"))),
  cbpp = glmer(cbind(incidence, size - incidence) ~ period + (1|herd), family = binomial, data = cbpp)
)
boot_fun <- function(fit) c(deviance = deviance(fit), fixef(fit), getME(fit, "theta"))
results <- list()
for (name in names(models)) {
  elapsed <- system.time(
    b <- suppressWarnings(suppressMessages(bootMer(models[[name]], boot_fun, nsim = nsim, type = "parametric",
                                                   use.u = FALSE, seed = 42L)))
  )[["elapsed"]]
  results[[name]] <- list(nsim = nsim, seconds = elapsed, ms_per_replicate = 1000 * elapsed / nsim)
}
results[["_meta"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")), date = format(Sys.time()))
write_json(results, out, auto_unbox = TRUE, pretty = TRUE, digits = NA)
