"""Dialogue summarization templates and their inversion (write a dialogue for a summary)."""
from flan_tasks.templates import DEFAULT_FEW_SHOT_PATTERNS, TemplateFamily, register_family

DIALOGUE_SUMMARIZATION = register_family(TemplateFamily(
    name="dialogue_summarization",
    description="Summarize a multi-speaker dialogue in one or two sentences.",
    templates=(
        ("{dialogue}\n\nBriefly summarize that dialogue.", "{summary}"),
        ("Here is a dialogue:\n{dialogue}\n\nWrite a short summary!", "{summary}"),
        ("Dialogue:\n{dialogue}\n\nWhat is a summary of this dialogue?", "{summary}"),
        ("{dialogue}\n\nWhat was that dialogue about, in two sentences or less?", "{summary}"),
        ("Here is a dialogue:\n{dialogue}\n\nWhat were they talking about?", "{summary}"),
        ("Dialogue:\n{dialogue}\nWhat were the main points in that conversation?", "{summary}"),
        ("Dialogue:\n{dialogue}\nWhat was going on in that conversation?", "{summary}"),
        ("Summarize this dialogue:\n{dialogue}", "{summary}"),
        ("Read the following conversation and write a one-sentence summary.\n\n{dialogue}", "{summary}"),
        ("{dialogue}\n\nIn a sentence, what happened in this chat?", "{summary}"),
        ("Conversation:\n{dialogue}\n\nTL;DR:", "{summary}"),
    ),
    few_shot_patterns=DEFAULT_FEW_SHOT_PATTERNS,
))

DIALOGUE_INVERSION = register_family(TemplateFamily(
    name="dialogue_inversion",
    description="Write a dialogue that matches a given summary.",
    templates=(
        ("Write a dialogue based on this summary:\n{summary}.", "{dialogue}"),
        ("Write a dialog about anything you want.\n\nSummary: {summary}", "{dialogue}"),
        ("Write a conversation that fits this summary: {summary}", "{dialogue}"),
        ("Summary: {summary}\n\nWrite the dialogue this summary describes.", "{dialogue}"),
        ("Create a short chat between people in which the following happens: {summary}", "{dialogue}"),
        ("{summary}\n\nWrite a dialogue in which this happens.", "{dialogue}"),
        ("Compose a messenger conversation matching this description:\n{summary}", "{dialogue}"),
        ("Here is a summary of a conversation: {summary}\nWhat might the conversation have been?",
         "{dialogue}"),
        ("Imagine the dialogue behind this summary.\n{summary}", "{dialogue}"),
        ("Turn this summary into a dialogue between the people it mentions:\n{summary}", "{dialogue}"),
    ),
    few_shot_patterns=DEFAULT_FEW_SHOT_PATTERNS,
))
