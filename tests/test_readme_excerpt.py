"""The README's generated-adjoint excerpt is real output: regenerated from ``f2`` below, and this
test checks that every line of the excerpt appears, in order, in the generated module."""
import math
import re
from pathlib import Path

import srcgrad


def f2(a, b):
    c = a * b
    if c > 1.0:
        c = math.sin(c) * a
    else:
        c = c ** 2
    return c + math.exp(b)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks():
    """The two code blocks after the README's "Generated adjoint" heading: source, excerpt."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Generated adjoint"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return blocks[0], blocks[1]


def test_readme_adjoint_excerpt_is_generated_output():
    source, excerpt = readme_blocks()
    assert source.strip() == "\n".join(Path(__file__).read_text().splitlines()[9:16]).strip()
    generated = srcgrad.grad(f2, wrt=(0, 1), target="python").source_for(2.0, 0.75).splitlines()
    position = 0
    for line in excerpt.splitlines():
        if line.strip() in ("", "..."):
            continue
        while position < len(generated) and generated[position] != line:
            position += 1
        assert position < len(generated), f"README excerpt line not in the generated code: {line!r}"
        position += 1


def test_f2_gradient():
    from conftest import check_grad

    for a, b in ((2.0, 0.75), (0.3, 0.5)):     # both branches
        check_grad(f2, (a, b), wrt=(0, 1), target="python")
