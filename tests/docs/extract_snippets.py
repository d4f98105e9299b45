#!/usr/bin/env python3
"""Turns the ```cpp blocks of Markdown files into C++ translation units (docs/snippets.md).

    extract_snippets.py --root <repository> --out <directory> <file.md>...

Writes <out>/snippets_run.cpp (core, Eigen and xtensor blocks: a doctest case per fragment, run)
and <out>/snippets_libtorch.cpp (blocks that include a LibTorch header: compiled only). A block
is marked by an HTML comment on the lines before it:

    <!-- snippet: declarations -->   namespace-scope code (the default: no comment)
    <!-- snippet: fragment -->       statements, wrapped in a function (run where the TU runs)
    <!-- snippet: continue -->       namespace-scope code in the namespace of the block before it
    <!-- snippet: skip -->           not compiled (say why on the same line)

Lines after the mode, up to `-->`, are C++ at namespace scope placed before the block: the
declarations of a fragment's inputs. `#include` lines are hoisted to the top of the unit; in a
`continue` block, quoted includes of headers that are not the library's stand for the blocks
before it and are left out. `#line` directives point compiler messages at the Markdown lines.
"""
import argparse
import os
import re
import sys

MODES = ("declarations", "fragment", "continue", "skip")
BACKEND_INCLUDE = (
    ("libtorch", re.compile(r'#include\s*[<"]rlhf/(libtorch|ppo|distributed)')),
    ("eigen", re.compile(r'#include\s*[<"]rlhf/eigen')),
    ("xtensor", re.compile(r'#include\s*[<"]rlhf/xtensor')),
)
INCLUDE = re.compile(r"^\s*#\s*include\s*([<\"])([^>\"]+)[>\"]")


class Block:
    def __init__(self, path, line, mode, setup, setup_line, body):
        self.path, self.line, self.mode = path, line, mode
        self.setup, self.setup_line, self.body = setup, setup_line, body


def fail(path, line, message):
    sys.exit(f"{path}:{line}: {message}")


def parse(path, shown):
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, marker, i = [], None, 0
    while i < len(lines):
        text = lines[i]
        m = re.match(r"^<!--\s*snippet:\s*(\w+)(.*)$", text)
        if m:
            mode, rest = m.group(1), m.group(2)
            if mode not in MODES:
                fail(shown, i + 1, f"unknown snippet mode '{mode}' (one of {', '.join(MODES)})")
            setup, start = [], i + 1
            if "-->" not in rest:
                i += 1
                while i < len(lines) and "-->" not in lines[i]:
                    setup.append(lines[i])
                    i += 1
                if i == len(lines):
                    fail(shown, start, "snippet comment without '-->'")
            marker = (mode, setup, start + 1, i + 1)
        elif re.match(r"^(`{3,}|~{3,})", text):
            fence = re.match(r"^(`{3,}|~{3,})", text).group(1)
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not re.match("^" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence), lines[i]):
                body.append(lines[i])
                i += 1
            if text.strip() == "```cpp":
                mode, setup, setup_line = ("declarations", [], 0) if marker is None else marker[:3]
                if marker is not None and any(l.strip() for l in lines[marker[3]:start - 1]):
                    fail(shown, marker[3], "a snippet comment must come just before its ```cpp block")
                blocks.append(Block(shown, start, mode, setup, setup_line, body))
            elif marker is not None:
                fail(shown, marker[3], "a snippet comment must come just before a ```cpp block")
            marker = None
        i += 1
    return blocks


def group(blocks):
    """Blocks of one file in namespaces: a `continue` block joins the namespace before it."""
    groups = []
    for block in blocks:
        if block.mode == "skip":
            continue
        if block.mode == "continue":
            if not groups or groups[-1][0].path != block.path:
                fail(block.path, block.line, "a 'continue' block needs a block before it in the same file")
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def backend(blocks):
    text = "\n".join("\n".join(b.setup + b.body) for b in blocks)
    for name, pattern in BACKEND_INCLUDE:
        if pattern.search(text):
            return name
    return "core"


def emit_group(blocks, path_of, run):
    """Code of one namespace; returns (includes, code)."""
    first = blocks[0]
    ns = "rlhf_snippet_" + re.sub(r"\W", "_", first.path) + f"_{first.line}"
    includes, code = [], [f"namespace {ns} {{"]
    for block in blocks:
        body = []
        for offset, text in enumerate(block.body):
            m = INCLUDE.match(text)
            if not m:
                body.append((block.line + 1 + offset, text))
                continue
            own = m.group(1) == '"' and not m.group(2).startswith("rlhf/")
            if block.mode == "continue" and own:
                continue
            includes.append(text.strip())
        if block.setup:
            code.append(f'#line {block.setup_line} "{path_of(block.path)}"')
            code.extend(block.setup)
        if block.mode == "fragment":
            code.append("void run() {")
        line = None
        for number, text in body:
            if line != number:
                code.append(f'#line {number} "{path_of(block.path)}"')
            code.append(text)
            line = number + 1
        if block.mode == "fragment":
            code.append("}")
    code.append(f"}}  // namespace {ns}")
    if run:
        for block in blocks:
            if block.mode == "fragment":
                name = f"docs: {block.path}:{block.line}"
                code.append(f'TEST_CASE("{name}" * doctest::test_suite("unit")) {{ {ns}::run(); }}')
    return includes, code


def unit(groups, path_of, run, prologue):
    sections = {}
    for blocks in groups:
        includes, code = emit_group(blocks, path_of, run)
        sections.setdefault(backend(blocks), []).append((includes, code))
    out = ["// Generated from the documentation by tests/docs/extract_snippets.py: do not edit.", *prologue]
    for name in ("core", "eigen", "xtensor", "libtorch"):
        if name not in sections:
            continue
        guard = name in ("eigen", "xtensor")
        if guard:
            out.append(f"#if RLHF_SNIPPETS_WITH_{name.upper()}")
        seen = []
        for includes, _ in sections[name]:
            seen += [i for i in includes if i not in seen]
        out += seen
        for _, code in sections[name]:
            out += [""] + code
        if guard:
            out.append(f"#endif  // RLHF_SNIPPETS_WITH_{name.upper()}")
    return "\n".join(out) + "\n"


def write(path, text):
    if os.path.exists(path) and open(path, encoding="utf-8").read() == text:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    shown = {}
    blocks = []
    for path in args.files:
        name = os.path.relpath(os.path.abspath(path), root)
        shown[name] = os.path.abspath(path)
        blocks += parse(path, name)
    groups = group(blocks)
    path_of = lambda name: shown[name]
    torch = [g for g in groups if backend(g) == "libtorch"]
    other = [g for g in groups if backend(g) != "libtorch"]
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "snippets_run.cpp"), unit(other, path_of, True, ["#include <doctest/doctest.h>"]))
    write(os.path.join(args.out, "snippets_libtorch.cpp"),
          unit(torch, path_of, False, ['#include "support/doctest_torch.hpp"']))


if __name__ == "__main__":
    main()
