# Parametric-bootstrap likelihood-ratio tests with pbkrtest::PBmodcomp, and the classical
# likelihood-ratio tests of lme4's anova(), for the comparisons jaxmm.pblrt is checked against:
#   slope:   reaction ~ 1 + (1 + days | subj)         vs  reaction ~ 1 + days + (1 + days | subj)
#   ranef:   reaction ~ 1 + days + (1 | subj)         vs  reaction ~ 1 + days + (1 + days | subj)
# (sleepstudy, ML fits), and for the classical test only:
#   reml:    the slope comparison fitted by REML (anova() refits both by ML)
#   zerocorr: reaction ~ 1 + days + zerocorr(1 + days | subj) vs reaction ~ 1 + days + (1 + days | subj)
#
# Run from the repository root (nsim defaults to 2000; 0 skips PBmodcomp):
#     Rscript bench/pbkrtest_pbmodcomp.R [nsim]
# Writes bench/results/pbkrtest_pbmodcomp.json (per comparison: PBmodcomp's summary table,
# timing, quantiles of the reference distribution; anova() of every comparison),
# bench/results/pbkrtest_<comparison>.csv (PBmodcomp's reference LRT values, one per replicate)
# and the test fixture tests/fixtures/pbkrtest_lrt.json (the anova() tables, and the reference
# distribution's quantiles and moments with PBmodcomp's Gamma and Bartlett p-values).

suppressPackageStartupMessages({
  library(lme4)
  library(pbkrtest)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
nsim <- if (length(args) >= 1) as.integer(args[1]) else 2000L
seed <- 42L
probs <- c(0.5, 0.9, 0.95, 0.99)

sleep <- read.csv("jaxmm/data/sleepstudy.csv", stringsAsFactors = FALSE)
sleep$subj <- factor(sleep$subj)
fit <- function(f, reml = FALSE) lmer(f, data = sleep, REML = reml)

comparisons <- list(
  slope = list(small = reaction ~ 1 + (1 + days | subj),
               large = reaction ~ 1 + days + (1 + days | subj), reml = FALSE, pb = TRUE),
  ranef = list(small = reaction ~ 1 + days + (1 | subj),
               large = reaction ~ 1 + days + (1 + days | subj), reml = FALSE, pb = TRUE),
  reml = list(small = reaction ~ 1 + (1 + days | subj),
              large = reaction ~ 1 + days + (1 + days | subj), reml = TRUE, pb = FALSE),
  zerocorr = list(small = reaction ~ 1 + days + (1 | subj) + (0 + days | subj),
                  large = reaction ~ 1 + days + (1 + days | subj), reml = FALSE, pb = FALSE)
)

dir.create("bench/results", showWarnings = FALSE, recursive = TRUE)
results <- list()
fixture <- list()
for (name in names(comparisons)) {
  cmp <- comparisons[[name]]
  small <- fit(cmp$small, cmp$reml)
  large <- fit(cmp$large, cmp$reml)
  a <- suppressMessages(anova(small, large))  # refits REML fits by ML
  anova_tab <- list(
    deviance = unname(a$deviance), npar = unname(a$npar),
    chisq = unname(a$Chisq[2]), df = unname(a$Df[2]), p_value = unname(a[["Pr(>Chisq)"]][2])
  )
  entry <- list(small = deparse(cmp$small), large = deparse(cmp$large), REML = cmp$reml,
                anova = anova_tab)
  fix <- entry
  if (cmp$pb && nsim > 0) {
    set.seed(seed)  # PBmodcomp ignores its own seed argument when it samples on one core
    elapsed <- system.time(pb <- PBmodcomp(large, small, nsim = nsim))[["elapsed"]]
    ref <- as.numeric(pb$ref)
    write.csv(data.frame(lrt = ref), sprintf("bench/results/pbkrtest_%s.csv", name), row.names = FALSE)
    s <- summary(pb)
    tab <- s$test
    q <- unname(quantile(ref, probs))
    entry$pbmodcomp <- list(
      nsim = nsim, seed = seed, seconds_total = elapsed, seconds_per_replicate = elapsed / nsim,
      npos = unname(s$samples[["npos"]]), n_extreme = s$n.extreme,
      lrt = tab["LRT", "stat"], df = tab["LRT", "df"],
      p_chisq = tab["LRT", "p.value"], p_pb = tab["PBtest", "p.value"],
      p_gamma = tab["Gamma", "p.value"], p_bartlett = tab["Bartlett", "p.value"],
      mean = unname(s$moment[["mean"]]), var = unname(s$moment[["var"]]),
      quantile_probs = probs, quantiles = q
    )
    fix$reference <- entry$pbmodcomp[c("nsim", "quantile_probs", "quantiles", "npos", "mean", "var",
                                       "lrt", "df", "p_gamma", "p_bartlett")]
    cat(sprintf("%-8s PBmodcomp nsim=%d  %.1f s  (%.4f s/replicate)\n", name, nsim, elapsed, elapsed / nsim))
    print(tab)
  }
  print(a)
  results[[name]] <- entry
  fixture[[name]] <- fix
}

meta <- list(
  call = "PBmodcomp(large, small, nsim) after set.seed(seed); anova(small, large)",
  quantile_type = 7,
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  pbkrtest_version = as.character(packageVersion("pbkrtest")),
  date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")
)
results[["_meta"]] <- meta
fixture[["_meta"]] <- meta[c("call", "quantile_type", "lme4_version", "pbkrtest_version")]
write_json(results, "bench/results/pbkrtest_pbmodcomp.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
if (nsim > 0) {
  write_json(fixture, "tests/fixtures/pbkrtest_lrt.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
  cat("wrote tests/fixtures/pbkrtest_lrt.json\n")
}
cat("wrote bench/results/pbkrtest_pbmodcomp.json\n")
