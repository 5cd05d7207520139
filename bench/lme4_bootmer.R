# Parametric bootstrap timing with lme4::bootMer (use.u = FALSE), ML fits:
#   dyestuff:   yield ~ 1 + (1|batch)
#   sleepstudy: reaction ~ 1 + days + (1 + days|subj)
# Each replicate returns c(deviance, fixef, sigma, theta).
#
# Run from the repository root (nsim defaults to 500):
#     Rscript bench/lme4_bootmer.R [nsim]
# Writes bench/results/lme4_bootmer.json (per model: nsim, timings, 2.5%/97.5%
# quantiles and shortest 95% interval of every column, singular counts) and the
# replicate tables bench/results/lme4_bootmer_<model>.csv.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
nsim <- if (length(args) >= 1) as.integer(args[1]) else 500L
seed <- 42L

load_data <- function(name, factors) {
  d <- read.csv(file.path("jaxmm/data", name), stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

models <- list(
  dyestuff   = lmer(yield ~ 1 + (1|batch), REML = FALSE,
                    data = load_data("dyestuff.csv", "batch")),
  sleepstudy = lmer(reaction ~ 1 + days + (1 + days|subj), REML = FALSE,
                    data = load_data("sleepstudy.csv", "subj"))
)

boot_fun <- function(fit) {
  c(deviance = deviance(fit), fixef(fit), sigma = sigma(fit), getME(fit, "theta"))
}

# Shortest interval containing a fraction `level` of the sorted values.
shortest_interval <- function(x, level = 0.95) {
  x <- sort(x[is.finite(x)])
  k <- ceiling(level * length(x))
  width <- x[k:length(x)] - x[1:(length(x) - k + 1)]
  i <- which.min(width)
  c(lower = x[i], upper = x[i + k - 1])
}

dir.create("bench/results", showWarnings = FALSE, recursive = TRUE)
results <- list()
for (name in names(models)) {
  m <- models[[name]]
  elapsed <- system.time(
    b <- suppressMessages(bootMer(m, boot_fun, nsim = nsim, type = "parametric",
                                  use.u = FALSE, seed = seed))
  )[["elapsed"]]
  tab <- as.data.frame(b$t, check.names = FALSE)
  write.csv(tab, sprintf("bench/results/lme4_bootmer_%s.csv", name), row.names = FALSE)

  # Diagonal elements of lambda have lower bound 0; isSingular() uses tol 1e-4.
  diag_theta <- as.matrix(tab[, names(getME(m, "theta"))[getME(m, "lower") == 0],
                              drop = FALSE])
  summary <- lapply(tab, function(x) {
    q <- quantile(x, c(0.025, 0.975), na.rm = TRUE, names = FALSE)
    s <- shortest_interval(x)
    list(estimate = NA, q025 = q[1], q975 = q[2],
         shortest95_lower = s[["lower"]], shortest95_upper = s[["upper"]])
  })
  for (col in names(summary)) summary[[col]]$estimate <- boot_fun(m)[[col]]

  results[[name]] <- list(
    formula = deparse(formula(m)), nsim = nsim, seed = seed,
    seconds_total = elapsed, seconds_per_replicate = elapsed / nsim,
    n_failed = sum(!complete.cases(tab)),
    n_singular_theta_eq_0 = sum(rowSums(diag_theta == 0) > 0, na.rm = TRUE),
    n_singular_theta_lt_1e4 = sum(rowSums(diag_theta < 1e-4) > 0, na.rm = TRUE),
    columns = summary
  )
  cat(sprintf("%-10s nsim=%d  %.2f s total  %.5f s/replicate  singular: %d (==0), %d (<1e-4)\n",
              name, nsim, elapsed, elapsed / nsim,
              results[[name]]$n_singular_theta_eq_0, results[[name]]$n_singular_theta_lt_1e4))
  print(do.call(rbind, lapply(summary, unlist)), digits = 6)
}

results[["_meta"]] <- list(
  call = "bootMer(m, FUN, nsim, type = 'parametric', use.u = FALSE, seed)",
  quantile_type = 7,
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")
)
write_json(results, "bench/results/lme4_bootmer.json",
           digits = NA, auto_unbox = TRUE, pretty = TRUE)
cat("wrote bench/results/lme4_bootmer.json\n")
