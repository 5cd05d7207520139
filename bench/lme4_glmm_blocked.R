# lme4's side of bench/bench_glmm_blocked.py: bootMer of cbpp and grouseticks, or one insteval fit.
#   cbpp:        incidence/size ~ 1 + period + (1|herd), weights = size (binomial)
#   grouseticks: ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location) (poisson)
#   insteval:    y3 ~ 1 + service + (1|s) + (1|d) + (1|dept), y3 = (y > 3) (bernoulli)
# bootMer: type = "parametric", use.u = FALSE, seed 42, Laplace fits (nAGQ = 1, glmer's defaults).
#
#     Rscript bench/lme4_glmm_blocked.R boot <nsim_cbpp> <nsim_grouseticks> <out.json>
#     Rscript bench/lme4_glmm_blocked.R insteval <nAGQ> <out.json>     (one fit; run it under /usr/bin/time -v)
# Run from the repository root.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
load_data <- function(name, factors) {
  d <- read.csv(file.path("jaxmm/data", name), stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
meta <- list(R_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
             loadavg_before = readLines("/proc/loadavg"), date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"))

if (args[1] == "boot") {
  cbpp <- load_data("cbpp.csv", c("herd", "period"))
  grouse <- load_data("grouseticks.csv", c("index", "brood", "year", "location"))
  fits <- list(
    cbpp = function() glmer(incidence / size ~ 1 + period + (1 | herd), family = binomial, weights = size, data = cbpp),
    grouseticks = function() glmer(ticks ~ 1 + year + cheight + (1 | index) + (1 | brood) + (1 | location),
                                   family = poisson, data = grouse)
  )
  nsim <- c(cbpp = as.integer(args[2]), grouseticks = as.integer(args[3]))
  out <- args[4]
  boot_fun <- function(fit) c(objective = -2 * as.numeric(logLik(fit)), fixef(fit), getME(fit, "theta"))
  results <- list()
  for (name in names(fits)) {
    fit_s <- system.time(m <- fits[[name]]())[["elapsed"]]
    elapsed <- system.time(
      b <- suppressWarnings(suppressMessages(
        bootMer(m, boot_fun, nsim = nsim[[name]], type = "parametric", use.u = FALSE, seed = 42L)))
    )[["elapsed"]]
    results[[name]] <- list(formula = deparse(formula(m)), nsim = nsim[[name]], fit_seconds = fit_s,
                            seconds_per_replicate = elapsed / nsim[[name]],
                            n_failed = sum(!complete.cases(b$t)), objective = -2 * as.numeric(logLik(m)))
    cat(sprintf("%-12s fit %.2f s  %.4f s/replicate\n", name, fit_s, elapsed / nsim[[name]]))
  }
} else {
  d <- load_data("insteval.csv.gz", c("s", "d", "dept", "service"))
  d$y3 <- as.numeric(d$y > 3)
  nagq <- as.integer(args[2])
  out <- args[3]
  fit_s <- system.time(
    m <- glmer(y3 ~ 1 + service + (1 | s) + (1 | d) + (1 | dept), family = binomial, data = d, nAGQ = nagq)
  )[["elapsed"]]
  results <- list(insteval = list(nAGQ = nagq, fit_seconds = fit_s, objective = -2 * as.numeric(logLik(m)),
                                  theta = getME(m, "theta"), beta = fixef(m)))
  cat(sprintf("insteval nAGQ=%d fit %.1f s, -2 logLik %.4f\n", nagq, fit_s, -2 * as.numeric(logLik(m))))
}
results[["_meta"]] <- meta
write_json(results, out, digits = NA, auto_unbox = TRUE, pretty = TRUE)
