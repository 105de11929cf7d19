"""flan_tasks.code_escape: reversible on any text, and what it buys under the T5 vocabulary."""
import pytest
from hypothesis import given, strategies as st

from flan_tasks import code_escape, metrics
from tests.conftest import SHARED_DATASETS, SHARED_SPIECE


@given(st.text())
def test_unescape_inverts_escape(text):
  assert code_escape.unescape(code_escape.escape(text)) == text


@pytest.mark.parametrize("text, escaped", [
    ("if (a < b) { x = ~y; }", "if (a &#60; b) &#123; x = &#126;y; &#125;"),
    ("s = \"&#123;\";", "s = \"&#38;#123;\";"),  # a literal reference survives the round trip
    ("a && b", "a && b"),  # & without # after it is left alone
])
def test_escape_examples(text, escaped):
  assert code_escape.escape(text) == escaped
  assert code_escape.unescape(escaped) == text


def test_postprocessor_strips_and_unescapes():
  assert code_escape.unescape_postprocessor("  void f() &#123;&#125; ") == "void f() {}"


@pytest.mark.skipif(not SHARED_SPIECE.exists(), reason="needs ../shared's T5 spiece.model")
def test_escaped_code_survives_the_t5_vocabulary():
  import seqio  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.SentencePieceVocabulary(str(SHARED_SPIECE))
  for char in code_escape.T5_UNENCODABLE:  # each really is lost without escaping
    assert vocabulary.decode(vocabulary.encode(f"a{char}a")) != f"a{char}a", char
  code = "public static int Max(int a, int b) { return a < b ? b : a; } // ~x ^ y `z` \\n"
  lost = vocabulary.decode(vocabulary.encode(code))
  kept = code_escape.unescape(vocabulary.decode(vocabulary.encode(code_escape.escape(code))))
  assert kept == code and lost != code
  assert metrics.corpus_bleu([code], [kept]) == pytest.approx(100.0)
  assert metrics.corpus_bleu([code], [lost]) < 80.0
