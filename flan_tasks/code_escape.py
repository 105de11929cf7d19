"""Reversible escaping of the code characters the T5 SentencePiece vocabulary cannot encode.

T5's vocabulary (and Flan-T5's, the same file) maps `{`, `}`, `<`, `\\`, `^`, `` ` `` and `~` to
<unk>: on CodeXGLUE's Java->C# validation pairs every reference loses characters, so encoded then
decoded references score BLEU 40.3 and exact match 0 against themselves (docs/data.md). The
built-in code tasks therefore write each such character as a numeric reference, `{` -> `&#123;`,
whose pieces the vocabulary has, and their postprocessor undoes it before BLEU / exact match.

An `&` is escaped (`&#38;`) only where the original text has `#` right after it, so
`unescape(escape(s)) == s` for every string. Other characters the vocabulary lacks (a few accented
letters in comments) stay as they are and are lost; `flan_tasks.inspect` counts them.
"""
import re

# Printable ASCII characters T5's spiece.model cannot encode (decode(encode(c)) != c).
T5_UNENCODABLE = "<\\^`{}~"
_REFERENCE = re.compile(r"&#(\d+);")


def escape(text: str, characters: str = T5_UNENCODABLE) -> str:
  out = []
  for i, char in enumerate(text):
    if char in characters or (char == "&" and text[i + 1:i + 2] == "#"):
      out.append(f"&#{ord(char)};")
    else:
      out.append(char)
  return "".join(out)


def unescape(text: str) -> str:
  return _REFERENCE.sub(lambda m: chr(int(m.group(1))) if int(m.group(1)) < 0x110000 else m.group(0),
                        text)


def unescape_postprocessor(output: str, example=None, is_target: bool = False) -> str:
  """The code tasks' postprocess_fn: stripped and unescaped (predictions and targets alike)."""
  del example, is_target
  return unescape(output.strip())
