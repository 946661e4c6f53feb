"""Fast tests of the manuscript's checks that need no build: the PDF layout check (TeX log and aux
lines as pdflatex writes them), the prose checks (fragments, numbers without unit or uncertainty),
the findings' sentences, the HTML float numbering and the figure font check."""
from __future__ import annotations

import pytest

from paper import html, layout, prose


LOG = r"""
Overfull \hbox (16.7032pt too wide) in paragraph at lines 286--2
 [][]
Overfull \hbox (0.51pt too wide) in paragraph at lines 12--12
Overfull \vbox (86.6pt too high) has occurred while \output is active
Underfull \hbox (badness 3068) in paragraph at lines 4--4
"""

AUX = r"""
\newlabel{tab:identities}{{1}{4}{Symbolic identities}{table.caption.1}{}}
\newlabel{fig:mfclamp}{{5}{10}{Left}{figure.caption.5}{}}
\newlabel{sec:vit}{{5}{14}{ViT validation}{section.5}{}}
\newlabel{references}{{8}{19}{Conclusion}{section*.9}{}}
\newlabel{tab:replication}{{7}{20}{Replication}{table.caption.7}{}}
"""


def test_overfull_boxes_above_the_tolerance_are_reported():
    got = layout.overfull_boxes(LOG)
    assert got == ["hbox 16.7 pt in paragraph at lines 286--2", "vbox 86.6 pt has occurred while \\output is active"]
    assert layout.overfull_boxes(LOG, tol_pt=100.0) == []


def test_floats_on_or_after_the_references_page_are_reported():
    got = layout.floats_after_references(AUX)
    assert got == ["tab:replication on page 20 (References begin on page 19)"]
    assert layout.floats_after_references(AUX.replace("{20}{Replication", "{18}{Replication")) == []
    assert "no \\label{references}" in layout.floats_after_references("\\newlabel{fig:a}{{1}{2}{}{}{}}")[0]
    assert len(layout.problems(LOG, AUX)) == 3


def test_fragments_are_found():
    bad = prose.fragments([r"absolute times are not comparable across hardware, the ratio is",
                           r"\VitEpochTimeCffOne{} s vs \VitEpochTimeCffTwo{} s (cpu; load 3.1)",
                           "the clamp is active for 60\\% of the pairs,", "a complete sentence."])
    assert len(bad) == 2 and bad[0].endswith("the ratio is") and bad[1].endswith("pairs,")
    cells = prose.table_cells("\\toprule a & b \\\\ \\midrule x & y, \\\\ z & the ratio is \\\\ \\bottomrule")
    assert [c.strip() for c in cells] == ["x", "y,", "z", "the ratio is"]


def test_numbers_without_unit_or_uncertainty_are_found():
    rules = {"VitProbeAcc": (r"\\%", ("VitProbeSd",)), "VitEpochTimeCffOne": (r"\\,s", ())}
    ok = r"reaches \VitProbeAcc\% (SD \VitProbeSd{} points) and \VitEpochTimeCffOne\,s per epoch"
    assert prose.unquantified(ok, rules) == []
    bad = prose.unquantified(r"reaches \VitProbeAcc\% on the test set; \VitEpochTimeCffOne{} per epoch", rules)
    assert len(bad) == 2 and "uncertainty" in bad[0] and "unit" in bad[1]
    # a definition is not a use
    assert prose.unquantified(r"\newcommand{\VitProbeAcc}{81.30}", rules) == []


def test_float_numbers_follow_latex_order_per_kind():
    tex = (r"\begin{figure}\caption{a}\label{fig:a}\end{figure} see Table~\ref{tab:b}"
           r"\begin{table}\caption{b}\label{tab:b}\begin{tabular}{l}x\end{tabular}\begin{tabular}{l}y\end{tabular}"
           r"\end{table}\begin{table}\caption{c}\label{tab:c}\end{table}\begin{figure}\caption{d}\label{fig:d}"
           r"\end{figure} and Figure~\ref{fig:d}, Section~\ref{sec:x}")
    assert html.float_numbers(tex) == {"fig:a": ("Figure", 1), "tab:b": ("Table", 1), "tab:c": ("Table", 2),
                                       "fig:d": ("Figure", 2)}
    got = html.number_floats(tex)
    assert r"\caption{Table 2: c}" in got and r"\caption{Figure 2: d}" in got and got.count("Table 1: ") == 1
    assert r"Table~\hyperref[tab:b]{1}" in got and r"Figure~\hyperref[fig:d]{2}" in got
    assert r"Section~\ref{sec:x}" in got          # sections: pandoc numbers them as LaTeX does


def test_mathml_fences_lose_operator_spacing():
    src = '<mrow><mi>P</mi><mo stretchy="true" form="prefix">(</mo><mi>i</mi><mo form="postfix">)</mo><mo>+</mo>'
    got = html.tidy_mathml(src)
    assert got.count('lspace="0em" rspace="0em"') == 2 and "<mo>+</mo>" in got


def test_display_fences_stretch_only_around_tall_content():
    """pandoc marks P(i)'s parentheses stretchy, which browsers draw with a tall glyph's spacing
    ("P ( i )"); only the fences around a fraction or a sum with limits may stretch."""
    fence = lambda c, inner: (f'<mrow><mo stretchy="true" form="prefix">{c[0]}</mo>{inner}'  # noqa: E731
                              f'<mo stretchy="true" form="postfix">{c[1]}</mo></mrow>')
    small = fence("()", "<mi>i</mi>")
    tall = fence("()", "<munder><mo>∑</mo><mi>n</mi></munder><mi>x</mi>")
    src = ('<p><math display="block" xmlns="http://www.w3.org/1998/Math/MathML"><semantics><mrow><mi>P</mi>'
           f'{small}<mo>+</mo><mo>log</mo>{tall}<mo>+</mo><mo>min</mo>{fence("()", "<mi>s</mi>")}</mrow>'
           '<annotation encoding="application/x-tex">P(i) + \\log\\left(\\sum_n x\\right) + \\min(s)</annotation>'
           '</semantics></math></p>')
    got = html.tidy_mathml(src)
    assert got.count('stretchy="false"') == 4 and got.count('stretchy="true"') == 2
    assert got.index('stretchy="true"') > got.index("log")          # the fences of the sum, only
    assert "<mi>log</mi>" in got and "<mi>min</mi>" in got and "<mo>log</mo>" not in got
    assert got.count('lspace="0em" rspace="0em"') == 6 and "\\left(" in got
    assert got.startswith("<p><math") and got.endswith("</math></p>")
    # math that does not parse is left as it is
    bad = '<math display="block"><mrow><mi>x</mrow></math>'
    assert html.tidy_mathml(bad) == bad


def test_value_range_never_degenerate():
    from paper.tex import value_range
    assert value_range(8.771, 8.769, ".2f") == "8.77"
    assert value_range(3.25, 5.14) == "3.2--5.1"


def test_findings_are_sentences_with_a_status():
    from paper.findings import Finding, abstract_tex, conclusion_tex
    with pytest.raises(ValueError):
        Finding("maybe", "x", "x.", "sec:a")
    with pytest.raises(ValueError):
        Finding("confirmed", "x", "the ratio is", "sec:a")
    fs = [Finding("confirmed", "a holds", "A holds.", "sec:a"), Finding("confirmed", "b holds", "B holds.", "sec:b"),
          Finding("not tested", "c holds (other data)", "C holds; other data.", "sec:c"),
          Finding("confirmed", "", "D holds.", "sec:d"), Finding("not tested", "", "E holds; other data.", "sec:e"),
          Finding("not tested", "", "F holds; other device.", "sec:f")]
    ab = abstract_tex(fs)
    # headline findings (a clause) are stated by status; the others are counted, by status
    assert ab == ("This build confirms that a holds; and that b holds.\nIt could not test that c holds (other data)."
                  "\nThe Conclusion states 3 further findings (1 confirmed, 2 not tested).")
    assert "refutes" not in ab and "D holds" not in ab
    assert abstract_tex([Finding("refuted", "x holds", "X holds.", "sec:x")]) == "This build refutes that x holds."
    co = conclusion_tex(fs)
    # the Conclusion states every finding, the counted ones too
    assert r"\item Section~\ref{sec:a}: A holds." in co and r"\paragraph{Not tested by this build.}" in co
    assert all(f.sentence in co for f in fs)
    assert abstract_tex([]).endswith(".")


def test_abstract_word_count():
    from paper.findings import abstract_words
    assert abstract_words("We find that VR = 0.243 (95% CI [0.0963, 0.582]); 12 seeds.") == 11
    assert abstract_words("2.6 × 10−12, Pitman–Morgan p = 0.698.") == 5
    assert abstract_words("") == 0


def test_small_figure_fonts_are_refused(tmp_path):
    from cffdyn.figures import MIN_FONT_PT, TEXT_WIDTH_IN, figure, save_figure, small_fonts
    fig, ax = figure(TEXT_WIDTH_IN, 2.0)
    ax.set_title("readable")
    assert small_fonts(fig, fig.get_figwidth()) == []
    ax.text(0.5, 0.5, "tiny", fontsize=MIN_FONT_PT - 2)
    assert small_fonts(fig, fig.get_figwidth())[0].startswith("'tiny'")
    with pytest.raises(ValueError, match="fonts below"):
        save_figure(fig, tmp_path, "x")


def _recorded_noise_dose() -> dict:
    import json

    from vit import noise_dose as nd
    pred, sha = nd.load_prediction_record()
    rec = nd.find_noise_dose_record(json.loads(json.dumps(nd.NOISE_DOSE.to_dict())), sha)
    if rec is None:
        pytest.skip("recorded/vit/noise_dose is missing")
    return rec["payload"]


def test_noise_dose_text_names_each_verdict_by_the_kind_of_its_intervals():
    """The section's per-dose sentences come from the kind function of the recorded intervals:
    each curve's words there are its kind's, and a verdict word that is not its intervals' is refused."""
    from paper import noise_dose as pnd
    from vit.noise_dose import verdict_kind
    data = _recorded_noise_dose()
    text = pnd.verdict_text({"noise_dose": data})
    lines = [ln for ln in text.splitlines() if ln.startswith("At dose")]
    levels = data["analysis"]["levels"]
    assert len(lines) == len(levels)
    for ln, lv in zip(lines, levels):
        c = lv["quantities"]["test_acc@sel"]
        for act, v in c["verdicts"].items():
            kind = verdict_kind(v["predicted_interval"], c["ci"])
            want = pnd._KIND_WORDS.get(kind, f"{v['verdict']} (predicted")
            assert f"{act} {want}" in ln, (kind, ln)
    c = levels[0]["quantities"]["test_acc@sel"]
    v = dict(c["verdicts"]["tanh"], verdict="confirmed")
    with pytest.raises(ValueError, match="not that of its intervals"):
        pnd._short("tanh", v, c["ci"])


def test_rules_come_from_what_the_specs_declare():
    from cffdyn.exports import NumberSpec
    from paper.numbers import Number, write_numbers
    import json
    import tempfile
    from pathlib import Path
    specs = [NumberSpec("VitProbeAcc", "s", "a", unit=r"\%", uncertainty=("VitProbeSd",)),
             NumberSpec("ConvExponent", "s", "b", uncertainty=("ConvExponentLo",)),
             NumberSpec("VitWallMin", "s", "c", unit=r"\,min"), NumberSpec("VitSeeds", "s", "d", "d")]
    with tempfile.TemporaryDirectory() as d:
        _, js = write_numbers([Number(sp, 1.0, "1.00", "x.json") for sp in specs], Path(d))
        checks = prose.rules(json.loads(Path(js).read_text()))
    assert checks == {"VitProbeAcc": (r"\\%", ("VitProbeSd",)), "ConvExponent": ("", ("ConvExponentLo",)),
                      "VitWallMin": (r"\\,min", ())}
    assert prose.unquantified(r"\VitWallMin\,min and \VitProbeAcc\% (SD \VitProbeSd)", checks) == []
    assert len(prose.unquantified(r"\VitWallMin{} minutes, \ConvExponent.", checks)) == 2
