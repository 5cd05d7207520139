# Wall-clock time of a full lmer() call (ML, default lmerControl()) for a few
# reference models; baseline for comparing jaxmm fit times.
#
# Run from the repository root:
#     Rscript bench/lme4_fit_times.R
# Prints and writes bench/results/lme4_fit_times.json:
#     {"<model>": median seconds per fit, ..., "_meta": {...}}
# Each model is fitted once untimed (warm-up), then N times (20 for the small
# models, 3 for insteval); the median elapsed time is reported.

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

results <- list()
for (name in names(benches)) {
  b <- benches[[name]]
  fit <- function() lmer(b[[2]], data = b[[1]], REML = FALSE)
  m <- fit()  # warm-up
  times <- replicate(b[[3]], system.time(fit())[["elapsed"]])
  results[[name]] <- median(times)
  cat(sprintf("%-12s n=%2d  median %.4f s/fit  (min %.4f, max %.4f)  deviance %.6f\n",
              name, b[[3]], median(times), min(times), max(times), deviance(m)))
}

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
