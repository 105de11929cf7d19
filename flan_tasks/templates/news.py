"""News and article summarization templates."""
from flan_tasks.templates import DEFAULT_FEW_SHOT_PATTERNS, TemplateFamily, register_family

NEWS_SUMMARIZATION = register_family(TemplateFamily(
    name="news_summarization",
    description="Summarize a news article.",
    templates=(
        ("{document}\n\nWhat is a summary of this text?", "{summary}"),
        ("Article: {document}\n\nA summary of the above article is?", "{summary}"),
        ("{document}\nWhat was this article about?", "{summary}"),
        ("Summarize this article:\n\n{document}", "{summary}"),
        ("Summarize this article in one sentence.\n{document}", "{summary}"),
        ("{document}\n\nWrite a brief summary of the article above.", "{summary}"),
        ("Write a summary for the following article:\n\n{document}", "{summary}"),
        ("{document}\nTL;DR:", "{summary}"),
        ("Here is a news article: {document}\n\nWhat are its key points?", "{summary}"),
        ("Read this news story and summarize it.\n\n{document}", "{summary}"),
        ("Give the highlights of this article:\n{document}", "{summary}"),
    ),
    few_shot_patterns=DEFAULT_FEW_SHOT_PATTERNS,
))
