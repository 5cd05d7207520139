# Wall-clock time of a full lmer() call (ML, default lmerControl()) for a few
# reference models; baseline for comparing jaxmm fit times.
#
# Run from the repository root:
#     Rscript bench/lme4_fit_times.R                      # all models, default repeats
#     Rscript bench/lme4_fit_times.R dyestuff=10 insteval=2   # only these, N repeats each
# Arguments are <model>=<N>; with none, every model runs with its default N
# (20 for the small models, 3 for insteval).
# Prints and writes bench/results/lme4_fit_times.json:
#     {"<model>": median seconds per fit, ..., "_details": {"<model>": {n, times,
#      median, min, max, deviance}}, "_meta": {...}}
# A model timed more than 3 times (the cheap ones) is first fitted once untimed
# (warm-up); one timed 3 times or fewer (insteval, ~45 s a fit) is not, since
# lme4's code is already warm from the models before it. The median elapsed
# time is reported.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

load_data <- function(name, factors) {
  path <- file.path("jaxmm/data", name)
  con <- if (grepl("\\.gz$", path)) gzfile(path) else path
  d <- read.csv(con, stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

benches <- list(
  dyestuff   = list(load_data("dyestuff.csv", "batch"),
                    yield ~ 1 + (1|batch), 20),
  sleepstudy = list(load_data("sleepstudy.csv", "subj"),
                    reaction ~ 1 + days + (1 + days|subj), 20),
  penicillin = list(load_data("penicillin.csv", c("plate", "sample")),
                    diameter ~ 1 + (1|plate) + (1|sample), 20),
  insteval   = list(load_data("insteval.csv.gz",
                              c("s", "d", "dept", "studage", "lectage", "service")),
                    y ~ 1 + service + (1|s) + (1|d) + (1|dept), 3)
)

args <- commandArgs(trailingOnly = TRUE)
if (length(args) > 0) {
  kv <- strsplit(args, "=", fixed = TRUE)
  wanted <- vapply(kv, `[`, "", 1)
  bad <- setdiff(wanted, names(benches))
  if (length(bad) > 0) stop("unknown model(s): ", paste(bad, collapse = ", "))
  for (x in kv) if (length(x) == 2) benches[[x[1]]][[3]] <- as.integer(x[2])
  benches <- benches[wanted]
}

results <- list()
details <- list()
for (name in names(benches)) {
  b <- benches[[name]]
  fit <- function() lmer(b[[2]], data = b[[1]], REML = FALSE)
  if (b[[3]] > 3) m <- fit()  # warm-up
  times <- numeric(b[[3]])
  for (i in seq_len(b[[3]])) times[i] <- system.time(m <- fit())[["elapsed"]]
  results[[name]] <- median(times)
  details[[name]] <- list(n = b[[3]], times = times, median = median(times),
                          min = min(times), max = max(times), deviance = deviance(m))
  cat(sprintf("%-12s n=%2d  median %.4f s/fit  (min %.4f, max %.4f)  deviance %.6f\n",
              name, b[[3]], median(times), min(times), max(times), deviance(m)))
}

results[["_details"]] <- details
results[["_meta"]] <- list(
  what = "median elapsed seconds per lmer(..., REML = FALSE) call",
  n_reps = lapply(benches, `[[`, 3),
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  blas = extSoftVersion()[["BLAS"]],
  cpu = tryCatch(sub(".*: ", "", grep("model name", readLines("/proc/cpuinfo"),
                                      value = TRUE)[1]), error = function(e) NA),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")
)

dir.create("bench/results", showWarnings = FALSE, recursive = TRUE)
write_json(results, "bench/results/lme4_fit_times.json",
           digits = NA, auto_unbox = TRUE, pretty = TRUE)
cat("wrote bench/results/lme4_fit_times.json\n")
