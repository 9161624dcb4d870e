"""The web page's script, run by Node against a minimal DOM (where no browser is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import pytest

NODE = shutil.which("node")
PAGE = resources.files("emoknn.web").joinpath("index.html").read_text(encoding="utf-8")

# Just enough DOM for render(): elements keep their text, children, classes and style.
DOM_SHIM = r"""
class El {
  constructor(id) { this.id = id; this.children = []; this.style = {}; this.dataset = {};
    this.classes = new Set(); this.textContent = ""; this.hidden = true; this.title = ""; }
  get classList() { const c = this.classes; return {
    add: (x) => c.add(x), remove: (x) => c.delete(x),
    toggle: (x, on) => (on ? c.add(x) : c.delete(x)) }; }
  set className(v) { this.classes = new Set(v.split(" ")); }
  appendChild(e) { this.children.push(e); return e; }
  append(...es) { this.children.push(...es); }
  replaceChildren() { this.children = []; }
  set innerHTML(v) { throw new Error("innerHTML used: " + v); }
  addEventListener() {}
}
const elements = {};
globalThis.document = {
  getElementById: (id) => (elements[id] ??= new El(id)),
  createElement: (tag) => new El(tag),
  documentElement: {},
};
globalThis.getComputedStyle = () => ({ getPropertyValue: () => "" });
globalThis.fetch = () => new Promise(() => {});
globalThis.navigator = {};
"""


def run_render(result: dict) -> dict:
    script = re.search(r"<script>(.*)</script>", PAGE, re.S).group(1)
    program = (
        DOM_SHIM
        + script
        + f"""
render({json.dumps(result)});
const text = (e) => [e.textContent, ...e.children.map(text)].join("|");
console.log(JSON.stringify({{
  verdict: elements.verdict.textContent,
  verdictClasses: [...elements.verdict.classes],
  bars: text(elements.bars),
  timeline: elements.timeline.children.map((b) => b.textContent),
}}));
"""
    )
    done = subprocess.run([NODE, "-e", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def result(no_speech: bool, label: str = "angry") -> dict:
    probabilities = {label: 0.95, "sad": 0.05}
    segment = {"start_s": 0.0, "end_s": 1.0, "label": label, "probabilities": probabilities,
               "no_speech": no_speech}  # fmt: skip
    return {"source": "a.wav", "label": label, "probabilities": probabilities,
            "duration_s": 2.0, "segments": [segment, {**segment, "start_s": 1.0, "end_s": 2.0,
                                                      "no_speech": False}],
            "no_speech": no_speech, "level_dbfs": -120.0 if no_speech else -12.0}  # fmt: skip


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_page_says_no_speech_instead_of_an_emotion():
    shown = run_render(result(no_speech=True))
    assert shown["verdict"] == "No speech detected (loudest -120 dBFS)"
    assert "no-speech" in shown["verdictClasses"]
    assert shown["timeline"] == ["no speech", "angry"]
    assert run_render(result(no_speech=False))["verdict"] == "angry"


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_labels_from_a_model_folder_are_text_not_html():
    label = '<img src=x onerror="alert(1)">'
    shown = run_render(result(no_speech=False, label=label))
    assert label in shown["bars"] and shown["verdict"] == label


def test_page_never_assigns_html_from_data():
    assert "innerHTML" not in PAGE
