#!/usr/bin/env python3
"""Reference verdicts of the math answer grader used by the Dr.LLM paper.

Generated with mathruler 0.1.0 (PyPI), run on Python 3.11 with sympy 1.14.0 and pylatexenc 2.11
(the versions pip resolved for it; mathruler pins neither):

    python3 -m venv /tmp/mathruler-venv
    /tmp/mathruler-venv/bin/pip install mathruler==0.1.0 sympy==1.14.0 pylatexenc==2.11 tqdm
    /tmp/mathruler-venv/bin/python scripts/mathruler_cases.py

Writes, relative to the repository root:
  tasks/tests/data/mathruler_cases.jsonl  {"pred", "gold", "correct"}: correct = grade_answer(pred, gold)
  tasks/tests/data/boxed_cases.jsonl      {"text", "boxed"}: boxed = extract_boxed_content(text)

The pairs are hand-written edge cases plus variants of real gold answers from
../shared/data/math/validation.jsonl (fixed seed, so the output is reproducible).
"""

import json
import logging
import random
import re
from pathlib import Path

from mathruler.grader import extract_boxed_content, grade_answer

ROOT = Path(__file__).resolve().parent.parent
VALIDATION = ROOT.parent / "shared" / "data" / "math" / "validation.jsonl"
OUT_GRADE = ROOT / "core" / "tests" / "data" / "mathruler_cases.jsonl"
OUT_BOXED = ROOT / "core" / "tests" / "data" / "boxed_cases.jsonl"

# (pred, gold) pairs written by hand, grouped by what they exercise.
HAND_PAIRS = [
    # fractions: \frac, \dfrac, \tfrac, \frac12, a/b, reduced or not
    (r"\frac12", r"\frac{1}{2}"), (r"\dfrac{1}{2}", r"\frac{1}{2}"), (r"\tfrac{3}{4}", "3/4"),
    ("1/2", r"\frac{1}{2}"), ("2/4", r"\frac{1}{2}"), (r"\frac{2}{4}", r"\frac12"),
    (r"\frac{4}{2}", "2"), ("2", r"\frac{4}{2}"), (r"\frac{-1}{2}", r"-\frac{1}{2}"),
    ("-1/2", r"-\frac12"), (r"\frac{1}{-2}", r"-\frac{1}{2}"), (r"\frac 1 2", r"\frac{1}{2}"),
    (r"\frac{1}2", "1/2"), (r"\frac1{72}", r"\frac{1}{72}"), (r"\frac{7}{3}", r"\frac{14}{6}"),
    (r"\frac{10}{3}", r"3\frac{1}{3}"), ("01/2", "1/2"), ("1 / 2", "1/2"), (r"\cfrac{1}{2}", r"\frac12"),
    (r"\frac{1}{2}", r"\frac{2}{1}"), (r"\frac{3}{5}", "0.6"), (r"\frac{1}{3}", "0.33"),
    # decimals against fractions and integers
    ("0.5", r"\frac{1}{2}"), (r"\frac{1}{2}", "0.5"), ("0.50", r"\frac12"), (".5", "0.5"),
    ("1.5", r"\frac{3}{2}"), ("1.5", "3/2"), ("0.75", r"\dfrac{3}{4}"), ("0.333", r"\frac{1}{3}"),
    ("0.3333333333", r"\frac{1}{3}"), ("2.0", "2"), ("2.00", "2"), ("2", "2.0"), ("2.5", r"\frac52"),
    ("13.180", "13.18"), ("13.2", "13.18"), ("4.0000000001", "4"), ("0.1", r"\frac{1}{10}"),
    ("-0.25", r"-\frac14"), ("1e5", "100000"), ("1.5e3", "1500"), ("1e-3", "0.001"),
    ("1E5", "100000"), (r"10^5", "100000"), (r"1.2\times10^{3}", "1200"),
    # integers are graded strictly: no sympy unless both sides are (or both are not) integers
    ("4", r"\frac{8}{2}"), ("4", r"\sqrt{16}"), ("4", "2^2"), ("2^2", "4"), ("6", "3!"),
    ("8", "2^3"), (r"2^{10}", "1024"), ("1024", r"2^{10}"), ("-3", "-3"), ("-3", "3"), ("- 3", "-3"),
    ("+3", "3"), ("−3", "-3"), ("-0", "0"), ("007", "7"), ("3 million", "3000000"),
    ("3\\text{ million}", "3,000,000"),
    # \left / \right, spaces, braces
    (r"\left(1,2\right)", "(1,2)"), (r"\left( 1, 2 \right)", "(1, 2)"), (r"\left[0,1\right)", "[0,1)"),
    (r"\left\{1,2\right\}", r"\{1,2\}"), ("{5}", "5"), ("{{5}}", "5"), ("5 ", "5"), (" 5", "5"),
    ("5\n", "5"),
    # \text units, words
    (r"180\text{ miles}", "180"), ("180 miles", "180"), (r"5\text{ cm}", "5"), (r"5 \text{cm}^2", "5"),
    (r"5\text{ cm}^2", "5"), ("12 inches", "12"), ("3 hours", "3"), ("2 days", "2"), ("10 feet", "10"),
    (r"40\text{ points}", "40"), (r"188\text{ units}", "188"), (r"\mbox{5 cm}", "5"), (r"5\mbox{ cm}", "5"),
    (r"\text{5}", "5"), (r"\text{(A)}", "A"), (r"\text{(C)}", r"\text{C}"), (r"\text{D}", "D"),
    ("(D)", r"\text{D}"), (r"\text{even}", "even"), (r"\text{Even}", r"\text{even}"), ("odd", r"\text{even}"),
    ("Monday", r"\text{Monday}"), ("Sunday", r"\text{Monday}"), ("yes", "Yes"), ("east", "west"),
    (r"\textbf{5}", "5"), (r"\mathrm{5}", "5"), (r"\text{ }5", "5"),
    # degrees, percent, dollars
    (r"90^\circ", "90"), (r"90^{\circ}", "90"), ("90", r"90^\circ"), (r"90^{\circ}", r"90^\circ"),
    ("90 degrees", "90"), (r"45^\circ", r"\frac{\pi}{4}"), (r"139^\circ", "139"), (r"10\%", "10"),
    ("10%", r"10\%"), ("0.1", r"10\%"), (r"\$5", "5"), (r"\$ 5.00", r"\$5"), ("5 dollars", r"\$5"),
    (r"\$36", "36"),
    # thousands separators
    ("1,000", "1000"), ("1000", "1,000"), (r"1{,}000", "1000"), (r"1,\!000", "1000"), (r"1\,000", "1000"),
    ("1,000,000", "1000000"), ("12,345.6", "12345.6"), ("1,0000", "10000"), ("1,00", "100"),
    (r"10,\!080", "10080"), (r"8{,}880", "8880"),
    # square roots
    (r"\sqrt2", r"\sqrt{2}"), (r"\sqrt{2}", "sqrt(2)"), ("sqrt2", r"\sqrt{2}"), (r"2\sqrt{3}", r"\sqrt{12}"),
    (r"\sqrt{12}", r"2\sqrt3"), (r"\sqrt{8}", r"2\sqrt{2}"), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"), (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    (r"\sqrt[3]{2}", r"\sqrt{2}"), ("1.414", r"\sqrt{2}"), (r"\sqrt{3}", r"\sqrt{2}"),
    (r"3\sqrt{2}", r"\sqrt{18}"), (r"\sqrt{50}", r"5\sqrt{2}"), (r"\frac{\sqrt{6}}{3}", r"\sqrt{\frac{2}{3}}"),
    (r"\sqrt{2}+\sqrt{3}", r"\sqrt{5+2\sqrt{6}}"), (r"1+\sqrt{2}", r"\sqrt{3+2\sqrt{2}}"),
    (r"\frac{1}{\sqrt{3}}", r"\frac{\sqrt{3}}{3}"), (r"2^{1/2}", r"\sqrt{2}"), ("2^(1/2)", r"\sqrt{2}"),
    (r"\sqrt{x^2}", "x"), (r"\sqrt{x}\sqrt{x}", "x"),
    # pi
    (r"\pi", "pi"), (r"2\pi", r"2 \pi"), (r"\frac{\pi}{2}", r"\pi/2"), (r"\frac{\pi}{2}", r"\frac12\pi"),
    (r"\frac{2\pi}{3}", r"\frac{2}{3}\pi"), ("3.14159", r"\pi"), (r"\pi r^2", r"r^2\pi"),
    (r"8\pi", r"8 \pi"), (r"\frac{32\pi}{81}", r"\frac{32}{81}\pi"), ("π", r"\pi"), (r"\pi+1", r"1+\pi"),
    (r"\frac{\pi}{4}", "0.785"),
    # tuples and intervals
    ("(1,2)", "(1, 2)"), ("(2,1)", "(1,2)"), ("[1,2]", "(1,2)"), ("1,2", "(1,2)"), ("(1,2,3)", "(1,2)"),
    (r"[0,\infty)", r"[0, \infty)"), (r"[0,\infty]", r"[0,\infty)"), (r"[0.0,\infty)", r"[0,\infty)"),
    (r"(-\infty, 2)", r"(-\infty,2)"), (r"(-\infty, 2]", r"(-\infty,2)"), (r"(\frac12, 3)", "(0.5, 3)"),
    (r"(0.5, 3)", r"\left(\frac{1}{2}, 3\right)"), ("(1,000, 2)", "(1000,2)"), ("(4,1)", "(4, 1)"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"), (r"(3, \frac{\pi}{2})", r"(3,\frac{\pi}{3})"),
    ("1, -2", "1,-2"), ("-2, 1", "1,-2"), ("1 and 2", "1, 2"), ("1 or 2", "1,2"), (r"\{1,2\}", r"\{2,1\}"),
    (r"(1,2) \cup (3,4)", r"(1,2)\cup(3,4)"), (r"(-\infty,0)\cup(0,\infty)", r"(-\infty, 0) \cup (0, \infty)"),
    (r"\left[ -\frac{\pi}{2}, \frac{\pi}{2} \right]", r"[-\pi/2, \pi/2]"), ("(x, y)", "(x,y)"),
    ("(2x, 3)", "(x*2, 3)"), ("(1,2)", "(1,(2))"),
    # algebra with one or two variables
    ("x+1", "1+x"), ("2x", "x*2"), ("2x", "2*x"), ("x^2", "x*x"), ("x^2", "x**2"), ("x^2-1", "(x-1)(x+1)"),
    ("(x+1)^2", "x^2+2x+1"), (r"\frac{x}{2}", "0.5x"), (r"\frac{x}{2}", "x/2"),
    (r"\frac{x+1}{2}", r"\frac{1+x}{2}"), (r"\frac{x}{2}+\frac{1}{2}", r"\frac{x+1}{2}"), ("xy", "yx"),
    ("x^2y", "yx^2"), ("a+b", "b+a"), ("3x+2y", "2y+3x"), ("x^{2}", "x^2"), ("x^{2}+1", "1+x^2"),
    ("3(x-2)(x+1)", "3x^2-3x-6"), ("8x -1", "8x-1"), ("x+6", "6+x"), ("x+7", "x+6"), ("2x+1", "2x-1"),
    ("6r^2-4r-24", "2(3r^2-2r-12)"), ("3x^2 - 7x + 4", "(3x-4)(x-1)"), ("x+y+z", "z+y+x"),
    ("x^3", "xxx"), ("x2", "2x"), ("x(x+1)", "x^2+x"), ("1/2x", "x/2"), ("1/(2x)", "x/2"),
    ("-2-14i", "-14i-2"), ("e^x", "e^{x}"), (r"e^{2x}", "e^(2x)"), ("x_1", "x_1"), ("x_1+1", "1+x_1"),
    (r"\alpha+1", r"1+\alpha"), ("x^{10}", "x^10"), ("x^10", "x^{10}"), ("x^10+1", "1+x^10"),
    ("2^3^2", "512"), (r"\ln 2", r"\ln(2)"), (r"\ln(4)", r"2\ln(2)"), (r"\log 4", r"2\log 2"),
    (r"\sin x", r"\sin(x)"), (r"\sec x", r"\frac{1}{\cos x}"), ("x/x", "1"), ("(x^2-1)/(x-1)", "x+1"),
    ("1/0", "1/0"), ("1/0", "2/0"), ("0/0", "0"), (r"(x+1)^{-1}", r"\frac{1}{x+1}"),
    # equations, \in
    ("x=3", "3"), ("3", "x=3"), ("x = 3", "3"), ("y=2x+1", "2x+1"), ("k=5", "5"), ("abc=5", "5"),
    ("x=3", "y=3"), ("b=0", "0"), ("x=1,2", "1,2"), ("x=1 or x=2", "1, 2"), (r"x \in [0,1]", "[0,1]"),
    (r"x\in(0,1)", r"(0,1)"), (r"\in [0,1]", "[0,1]"), ("x \\le 3", "x \\leq 3"), ("x<3", "x < 3"),
    # empty strings and None
    ("", "5"), ("5", ""), ("", ""), ("None", "5"), ("None", "None"), (" ", ""), ("{}", ""),
    # mixed numbers
    (r"1\frac{1}{2}", "1.5"), (r"1\frac12", r"\frac32"), (r"2\frac{1}{3}", "7/3"), ("7 3/4", "7.75"),
    (r"-1\frac{1}{2}", "-1.5"), (r"1 \frac{1}{2}", r"\frac{3}{2}"), ("1 1/2", "3/2"),
    # unicode
    ("½", "1/2"), ("√2", r"\sqrt{2}"), ("x²", "x^2"), ("５", "5"), ("٣", "3"), ("3", "٣"), ("Δ", r"\Delta"),
    ("∞", r"\infty"), ("1·2", "2"), ("−1/2", "-1/2"), ("α", r"\alpha"), ("é", "e"),
    # malformed LaTeX
    (r"\frac{1}{2", r"\frac12"), (r"\frac{1", "1"), (r"\frac", r"\frac"), (r"\frac", "1"), (r"\sqrt", "2"),
    (r"x\sqrt", "x"), (r"\sqrt{", "1"), (r"\sqrt{2", r"\sqrt{2}"), (r"\sqrt[3]", "3"), ("}{", "{}"),
    ("5}", "5"), ("{5", "5"), (r"\left(", "("), ("x^", "x"), ("\\\\", ""), (r"\boxed{5}", "5"),
    (r"\text{", ""), (r"\text{5", "5"), (r"\begin{pmatrix}\end{pmatrix}", "[]"), (r"a\\b", "ab"),
    (r"\frac{1}}2", "1/2"), ("{{1}{2}}", "12"), (r"\unknown{5}", "5"), (r"5\,", "5"),
    # matrices and vectors
    (r"\begin{pmatrix} -2 \\ 3 \\ 3 \end{pmatrix}", r"\begin{pmatrix}-2\\3\\3\end{pmatrix}"),
    (r"\begin{pmatrix} 2 \\ -11 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 11 \end{pmatrix}"),
    (r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
    ("(2,-11)", r"\begin{pmatrix} 2 \\ -11 \end{pmatrix}"),
    # \pm and miscellaneous symbols
    (r"1 \pm \sqrt{19}", r"1\pm\sqrt{19}"), (r"1+\sqrt{19}, 1-\sqrt{19}", r"1 \pm \sqrt{19}"),
    (r"x \neq 3", r"x \ne 3"), (r"\infty", "oo"), ("inf", r"\infty"), (r"5\cdot 2", "10"),
    (r"5 \times 2", r"5\cdot2"), (r"\frac{5}{2}\cdot\pi", r"\frac{5\pi}{2}"),
    # sympy's float semantics: exact fractions, 53-bit floats, floats apart from exact roots
    ("3/10.0", r"\frac{3}{10}"), ("0.3", r"\frac{3}{10}"), ("0.3333333333333333", r"\frac13"),
    ("1.4142135623730951", r"\sqrt2"), ("3.141592653589793", r"\pi"), (r"0.5\pi", r"\frac{\pi}{2}"),
    ("2^0.5", r"\sqrt{2}"), ("x^{0.5}", r"\sqrt{x}"), ("x^2.0", "x^2"), ("0.1x", r"\frac{x}{10}"),
    ("1.5x+2", r"\frac{3x+4}{2}"), ("1.5x+2", "(3x+4)/2"), ("0.75x", r"\frac34x"), (r"1.5\sqrt{2}", r"\frac{3\sqrt{2}}{2}"),
    ("0.1+0.2", "0.3"), ("0.5+0.25", "0.75"), ("3!+x", "6+x"), ("x_1+x_2", "x_2+x_1"), ("2j+x", "x+2i"),
    (r"\$a\dfrac{1}{29,\!322,\!216}", r"\dfrac{1}{29,\!322,\!216}"),
    # known disagreements of the port (float rounding next to symbols, 16-digit decimals)
    ("0.1x+0.2x", "0.3x"), ("x+0.1+0.2", "x+0.3"), ("0.3333333333333333y", r"\frac{1}{3}y"),
    # more answers that must not match
    ("1/3", "0.3"), ("x+1", "x-1"), ("(1,2)", "(1,3)"), (r"\frac{1}{2}", r"\frac{1}{3}"), (r"2\sqrt{2}", r"\sqrt{2}"),
    (r"\pi", r"2\pi"), ("x+y+1", "1+y+x"), (r"\sqrt{x}+y", r"y+\sqrt{x}"), ("x^2+y^2", "(x+y)^2"), ("-x", "x"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}"), ("[1,2)", "[1,2]"), ("12", "21"), ("0.25", r"\frac{1}{5}"),
    (r"\text{A}", r"\text{B}"), ("x^3", "x^2"), (r"\infty", r"-\infty"), ("2/3", "3/2"), ("100", "1,00"),
]

BOXED_TEXTS = [
    r"The answer is \boxed{5}.", r"\boxed{\frac{1}{2}}", r"So \boxed{x^{2}+1} is it", r"no box here",
    "", r"\boxed{}", r"\boxed{ 7 }", r"first \boxed{1} then \boxed{2}", r"\boxed{1} and \boxed{2} and \boxed{3}",
    r"\boxed{\left( 1, \frac{\pi}{2} \right)}", r"\boxed{a{b{c}}d}", r"\boxed{unclosed", r"\boxed{a{b}",
    r"\boxed{1} then \boxed{unclosed", r"\boxed {5}", r"\boxed{5} \boxed {6}", r"\boxed5", r"\boxed{{}}",
    r"\boxed{}}", r"\boxed{a}b}", r"\boxed{\text{(A)}}", r"\boxed{\$5}", r"\fbox{3}", r"\boxed{\boxed{4}}",
    r"\boxed{x} and more text after it", "\\boxed{\n12\n}", r"\boxed{é}", r"\boxed{√2}", r"\boxed{1,000}",
    r"\boxed{\dfrac{3}{4}}", r"\\boxed{9}", r"$\boxed{42}$", r"\[\boxed{10}\]", r"\boxed{\{1,2\}}",
    r"\boxed{\}}", r"\boxed{\{}", r"answer: \boxed{B} (B)", r"\Boxed{3}", r"\boxed{3} \boxed", r"\boxed{3}\boxed{",
    r"\boxed{ }", r"\boxed{-\frac{4}{25}}", r"\boxed{90^\circ}", "\\boxed{中文}", r"\boxed{x}}}}", r"}}}\boxed{y}",
    r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"The final answer is $\boxed{\text{even}}$.",
]


def real_gold_pairs(rng):
    """Pairs built from real gold answers: one plausible equivalent and one wrong variant each."""
    golds = [json.loads(line)["answer"] for line in VALIDATION.open(encoding="utf-8")]
    ints = sorted({g for g in golds if re.fullmatch(r"-?\d+", g)})
    others = sorted({g for g in golds if not re.fullmatch(r"-?\d+", g)})
    picked = rng.sample(ints, 35) + rng.sample(others, 70)
    pairs = []
    for gold in picked:
        pairs.append((equivalent_variant(gold, rng), gold))
        pairs.append((wrong_variant(gold, rng), gold))
    return pairs


def equivalent_variant(gold, rng):
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        options = [f"{n}.0", f"{n} ", rf"\text{{{n}}}", f"x = {n}", rf"{n}\text{{ units}}", f"{{{n}}}"]
        if abs(n) >= 1000:
            options.append(f"{n:,}")
        return rng.choice(options)
    options = [
        gold.replace(r"\frac", r"\dfrac"),
        gold.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac"),
        gold.replace(" ", ""),
        gold.replace(",", ", "),
        re.sub(r"\\frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", gold),
        re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", gold),
        gold.replace("(", r"\left(").replace(")", r"\right)"),
        rf"\text{{{gold}}}" if "\\" not in gold else gold.replace(r"\pi", r"\pi "),
    ]
    changed = [o for o in options if o != gold]
    return rng.choice(changed) if changed else gold + " "


def wrong_variant(gold, rng):
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        return str(rng.choice([n + 1, n - 1, -n if n else 1, n * 10]))
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    options = [f"-{gold}" if not gold.startswith("-") else gold[1:], gold + "+1"]
    if digits:
        i = rng.choice(digits)
        options.append(gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1 :])
    if "," in gold:
        parts = gold.split(",")
        options.append(",".join(reversed(parts)))
    return rng.choice(options)


def main():
    # pylatexenc logs a warning for every `\frac` missing its arguments; the verdicts are the point.
    logging.getLogger("pylatexenc").setLevel(logging.ERROR)
    rng = random.Random(20240917)
    pairs = HAND_PAIRS + real_gold_pairs(rng)
    seen = set()
    with OUT_GRADE.open("w", encoding="utf-8") as f:
        for pred, gold in pairs:
            if (pred, gold) in seen:
                continue
            seen.add((pred, gold))
            row = {"pred": pred, "gold": gold, "correct": bool(grade_answer(pred, gold))}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with OUT_BOXED.open("w", encoding="utf-8") as f:
        for text in BOXED_TEXTS:
            f.write(json.dumps({"text": text, "boxed": extract_boxed_content(text)}, ensure_ascii=False) + "\n")
    n_true = sum(1 for line in OUT_GRADE.open(encoding="utf-8") if json.loads(line)["correct"])
    print(f"{len(seen)} grade cases ({n_true} true), {len(BOXED_TEXTS)} boxed cases")


if __name__ == "__main__":
    main()
