# lmer (ML) on the 1,000,000-row crossed data set of bench/bench_large_n.py, for its side-by-side table.
#
#     Rscript bench/lme4_large_n.R <data.csv> <out.json> <fits>
#
# Reads the CSV (data.table::fread; not timed), makes a and b factors, then times `fits` calls of
# lmer(y ~ 1 + x + (1|a) + (1|b), REML = FALSE) one after another (the first is the "first" fit of a
# fresh R session, the rest "warm"). Memory: R's gc() "max used" (Ncells + Vcells, MB) over the fits,
# from gc(reset = TRUE) after the data are read; the process's peak RSS is measured from outside
# (/usr/bin/time -v). Writes {"times": [...], "deviance": d, "theta": [...], "beta": [...],
# "gc_max_used_mb": m, "data_mb": m, "_meta": {...}}.

suppressPackageStartupMessages({
  library(lme4)
  library(data.table)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
d <- as.data.frame(fread(args[1]))
d$a <- factor(d$a)
d$b <- factor(d$b)
data_mb <- sum(gc()[, 2])
invisible(gc(reset = TRUE))
times <- numeric(as.integer(args[3]))
for (i in seq_along(times)) {
  start <- proc.time()[["elapsed"]]
  m <- lmer(y ~ 1 + x + (1 | a) + (1 | b), data = d, REML = FALSE)
  times[i] <- proc.time()[["elapsed"]] - start
}
used <- gc()
out <- list(
  times = times, deviance = deviance(m), theta = unname(getME(m, "theta")), beta = unname(fixef(m)),
  gc_max_used_mb = sum(used[, ncol(used)]), data_mb = data_mb,
  `_meta` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA), args[2])
