# lmerTest (Satterthwaite), pbkrtest (Kenward-Roger) beside jaxmm.ddf: bench/bench_ddf.py runs
#     Rscript bench/ddf_lmertest.R <kb07-like csv>
# and reads bench/results/ddf_lmertest.json: per model, the REML fit's coefficient tables under
# both methods and the seconds each took (after the fit): Satterthwaite = as_lmerModLmerTest (the
# numerical Hessian and Jacobian) + summary; Kenward-Roger = summary(ddf = "Kenward-Roger"), which
# calls pbkrtest::vcovAdj once per coefficient, and one vcovAdj + Lb_ddf per coefficient (what
# emmeans does).
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
tight <- lmerControl(optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-15,
                                    maxeval = 1e5))
load_data <- function(path, factors) {
  d <- read.csv(path, stringsAsFactors = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}
models <- list(
  sleepstudy = list(load_data("jaxmm/data/sleepstudy.csv", "subj"), "reaction ~ 1 + days + (1 + days|subj)"),
  penicillin = list(load_data("jaxmm/data/penicillin.csv", c("plate", "sample")),
                    "diameter ~ 1 + (1|plate) + (1|sample)"),
  kb07_sim = list(load_data(args[1], c("subj", "item")),
                  "rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load|subj) + (1 + spkr + prec + load|item)")
)
tab <- function(x) { x <- as.data.frame(x, check.names = FALSE); x$term <- rownames(x); rownames(x) <- NULL; x }
out <- list(`_meta` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                           lmerTest = as.character(packageVersion("lmerTest")),
                           pbkrtest = as.character(packageVersion("pbkrtest")),
                           date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")))
for (id in names(models)) {
  d <- models[[id]][[1]]; f <- models[[id]][[2]]
  fit_s <- system.time(m <- lme4::lmer(as.formula(f), data = d, REML = TRUE, control = tight))[["elapsed"]]
  s_s <- system.time({mt <- as_lmerModLmerTest(m); sat <- coef(summary(mt, ddf = "Satterthwaite"))})[["elapsed"]]
  kr_s <- system.time(kr <- coef(summary(mt, ddf = "Kenward-Roger")))[["elapsed"]]
  adj_s <- system.time({
    V <- vcovAdj(m); p <- length(fixef(m))
    ddf <- sapply(seq_len(p), function(i) Lb_ddf(diag(p)[i, ], vcov(m), V))
  })[["elapsed"]]
  out[[id]] <- list(formula = f, nobs = nobs(m), fit_s = fit_s, satterthwaite_s = s_s, kenward_roger_summary_s = kr_s,
                    vcovAdj_and_Lb_ddf_s = adj_s, satterthwaite = tab(sat), kenward_roger = tab(kr))
  cat(sprintf("%-12s fit %.2fs  satterthwaite %.2fs  KR summary %.2fs  vcovAdj+Lb_ddf %.2fs\n", id, fit_s, s_s, kr_s,
              adj_s))
}
write_json(out, "bench/results/ddf_lmertest.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
