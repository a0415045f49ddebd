"""Links into the docs resolve: every `docs/<file>.md#anchor` (and
`<file>.md#anchor`) cited in code, configs, docs and notebooks names a
heading of that file, by GitHub's anchor rule."""
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"((?:docs/)?(?:[\w-]+/)*[\w-]+\.md)#([\w-]+)")


def slug(heading: str) -> str:
  """GitHub's anchor of a markdown heading: lower case, punctuation other
  than '-' and '_' dropped, spaces as '-'."""
  text = re.sub(r"[`*]", "", heading.strip().lower())
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(path: str) -> set:
  out, seen = set(), {}
  in_code = False
  for line in open(path, encoding="utf-8"):
    if line.startswith("```"):
      in_code = not in_code
    if in_code or not line.startswith("#"):
      continue
    s = slug(line.lstrip("#"))
    n = seen.get(s, 0)
    seen[s] = n + 1
    out.add(s if n == 0 else f"{s}-{n}")
  return out


def _files():
  names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
  return [n for n in names if n.endswith((".py", ".md", ".ipynb", ".sh"))]


def test_every_doc_anchor_is_a_heading():
  broken = []
  for name in _files():
    path = os.path.join(REPO, name)
    if not os.path.exists(path):
      continue
    text = open(path, encoding="utf-8").read()
    for target, anchor in LINK.findall(text):
      doc = os.path.normpath(os.path.join(REPO, target))
      if not os.path.exists(doc):
        # Relative to the citing file (links between docs).
        doc = os.path.normpath(os.path.join(os.path.dirname(path), target))
      if not os.path.exists(doc):
        broken.append(f"{name}: {target} does not exist")
      elif anchor not in anchors(doc):
        broken.append(f"{name}: {target}#{anchor} is not a heading")
  assert not broken, "\n".join(sorted(set(broken)))


def test_no_placeholder_urls():
  # A link with a placeholder owner opens nothing; say how to open instead.
  found = [n for n in _files() if n.endswith((".md", ".ipynb"))
           and "github.com/OWNER" in open(os.path.join(REPO, n),
                                          encoding="utf-8").read()]
  assert not found, found
