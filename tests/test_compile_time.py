"""m.optsum.compile_s: the seconds a fit spends compiling, > 0 for a shape not compiled yet in the
process and 0.0 when the compiled code is reused (LMM and GLMM)."""

from __future__ import annotations

import jaxmm


def test_a_new_shape_reports_its_compile_and_a_repeat_reports_none():
    sleep = jaxmm.dataset("sleepstudy").iloc[:173]  # a number of rows no other test fits
    first = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", sleep)
    again = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", sleep)
    assert first.optsum.compile_s > 0.0 and again.optsum.compile_s == 0.0
    assert again.optsum.compile_s <= first.optsum.compile_s


def test_a_glmm_fit_reports_its_compile():
    cbpp = jaxmm.dataset("cbpp").iloc[:53]
    cbpp = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    fits = [jaxmm.fit("prop ~ 1 + period + (1|herd)", cbpp, family="binomial", weights="size") for _ in range(2)]
    assert fits[0].optsum.compile_s > 0.0 and fits[1].optsum.compile_s == 0.0
