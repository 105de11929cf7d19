"""Code translation templates; `{source_lang}`/`{target_lang}` make one set serve both directions."""
from flan_tasks.templates import FewShotPattern, TemplateFamily, register_family

CODE_TRANSLATION = register_family(TemplateFamily(
    name="code_translation",
    description="Translate a function from one programming language to another.",
    templates=(
        ("Translate this {source_lang} code to {target_lang}:\n{source_code}", "{target_code}"),
        ("{source_code}\n\nRewrite the {source_lang} function above in {target_lang}.", "{target_code}"),
        ("Convert the following {source_lang} code into {target_lang}.\n\n{source_code}",
         "{target_code}"),
        ("{source_lang}:\n{source_code}\n{target_lang}:", "{target_code}"),
        ("How would you write this {source_lang} function in {target_lang}?\n{source_code}",
         "{target_code}"),
        ("Port this code from {source_lang} to {target_lang}.\n{source_code}", "{target_code}"),
        ("Here is a {source_lang} method: {source_code}\nWhat is the equivalent {target_lang} method?",
         "{target_code}"),
        ("Translate from {source_lang} to {target_lang}: {source_code}", "{target_code}"),
        ("Given the {source_lang} code\n{source_code}\nwrite the same logic in {target_lang}.",
         "{target_code}"),
        ("Source ({source_lang}): {source_code}\nTarget ({target_lang}):", "{target_code}"),
    ),
    few_shot_patterns=(
        FewShotPattern("", "", "\n", "\n\n"),
        FewShotPattern("Input: ", "Output: ", "\n", "\n\n"),
        FewShotPattern("Code: ", "Translation: ", "\n", "\n\n"),
    ),
))
