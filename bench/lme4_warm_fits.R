# Warm lmer() calls (ML) for the models that bench/bench_warm_fit.py lists, for its side-by-side table.
#
#     Rscript bench/lme4_warm_fits.R <spec.json> <out.json>
#
# spec.json: {"<model>": {"csv": path, "formula": "...", "factors": [columns], "repeats": N}, ...};
# each csv is the data frame jaxmm fits, its `factors` columns made R factors (levels as written).
# Per model: one untimed lmer() call (warm-up), then N timed batches of 5 calls (R's clock counts
# milliseconds; a call takes ~15-25), each time the batch's mean; writes
# {"<model>": {"times": [...], "median": s, "min": s, "max": s, "deviance": d}, "_meta": {...}}.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
spec <- fromJSON(args[1], simplifyVector = FALSE)
out <- list()
for (name in names(spec)) {
  s <- spec[[name]]
  d <- read.csv(s$csv, stringsAsFactors = FALSE)
  for (f in unlist(s$factors)) d[[f]] <- factor(d[[f]], levels = unique(sort(d[[f]])))
  form <- as.formula(s$formula)
  m <- lmer(form, data = d, REML = FALSE)  # warm-up
  times <- numeric(s$repeats)
  for (i in seq_len(s$repeats)) {
    start <- proc.time()[["elapsed"]]
    for (j in 1:5) m <- lmer(form, data = d, REML = FALSE)
    times[i] <- (proc.time()[["elapsed"]] - start) / 5
  }
  out[[name]] <- list(times = times, median = median(times), min = min(times), max = max(times),
                      deviance = deviance(m))
}
out[["_meta"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA), args[2])
