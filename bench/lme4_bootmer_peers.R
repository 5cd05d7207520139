# lme4's bootMer (type = "parametric", use.u = FALSE) per replicate, for bench/bench_peers_bootstrap.py.
#
#     Rscript bench/lme4_bootmer_peers.R spec.json out.json
#
# spec.json: {name: {formula, csv, factors, family (null: lmer, ML), weights (a column or null), nsim}}.
# Per model: the fit (lmer REML = FALSE, or glmer Laplace), then one timed bootMer of nsim replicates,
# seed 42, each returning c(deviance, fixef, theta). Writes {name: {nsim, fit_s, seconds, ms_per_replicate,
# n_failed, load_before}, "_meta": ...} to out.json; a model that fails gets {error}.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
spec <- fromJSON(args[1], simplifyVector = FALSE)
out <- args[2]

boot_fun <- function(fit) c(deviance = deviance(fit), fixef(fit), getME(fit, "theta"))
results <- list()
for (name in names(spec)) {
  s <- spec[[name]]
  load_before <- readLines("/proc/loadavg")
  res <- tryCatch({
    d <- read.csv(s$csv, stringsAsFactors = FALSE)
    for (f in unlist(s$factors)) d[[f]] <- factor(d[[f]])
    form <- as.formula(s$formula)
    fit_s <- system.time({
      m <- if (is.null(s$family)) {
        lmer(form, data = d, REML = FALSE)
      } else if (!is.null(s$weights)) {
        d$.w <- d[[s$weights]]
        glmer(form, data = d, family = s$family, weights = .w)
      } else {
        glmer(form, data = d, family = s$family)
      }
    })[["elapsed"]]
    elapsed <- system.time(
      b <- suppressWarnings(suppressMessages(bootMer(m, boot_fun, nsim = s$nsim, type = "parametric",
                                                     use.u = FALSE, seed = 42L)))
    )[["elapsed"]]
    list(nsim = s$nsim, fit_s = fit_s, seconds = elapsed, ms_per_replicate = 1000 * elapsed / s$nsim,
         n_failed = sum(!complete.cases(b$t)), load_before = load_before)
  }, error = function(e) list(error = conditionMessage(e), load_before = load_before))
  cat(sprintf("lme4 %s: %s ms/replicate\n", name, format(res$ms_per_replicate)))
  results[[name]] <- res
}
results[["_meta"]] <- list(
  call = "bootMer(m, FUN, nsim, type = 'parametric', use.u = FALSE, seed = 42)",
  R = R.version.string, lme4 = as.character(packageVersion("lme4")), date = format(Sys.time())
)
write_json(results, out, auto_unbox = TRUE, pretty = TRUE, digits = NA)
