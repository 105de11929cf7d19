"""Review rating (1-5 stars) templates, with and without an OPTIONS list.

`{options_}` is filled by the formatter with the task's answer options (see formatting.options_text).
"""
from flan_tasks.templates import DEFAULT_FEW_SHOT_PATTERNS, TemplateFamily, register_family

REVIEW_RATING = register_family(TemplateFamily(
    name="review_rating",
    description="Rate a product review from 1 (worst) to 5 (best) stars.",
    templates=(
        ("{review}\nOn a scale of 1-5 (with 1 being least favorable and 5 being most favorable), "
         "how would you rate this review?", "{rating}"),
        ("Review: {review}\nHow many stars would the reviewer give, from 1 to 5?", "{rating}"),
        ("What would be the star rating of this review (1 to 5)?\n{review}", "{rating}"),
        ("Write the star rating (1-5) of this review.\n\nReview: {review}\nStars:", "{rating}"),
        ("{review}\n\nHow many stars does this review deserve? {options_}", "{rating}"),
        ("Review: {review}\nOn a scale of 1 to 5, how satisfied was the customer?\n{options_}",
         "{rating}"),
        ("Rate the following review.\n{review}\n{options_}", "{rating}"),
        ("Here is a customer review: {review}\nWhat is its rating?\n{options_}", "{rating}"),
        ("{review}\nWould you say this is a 1, 2, 3, 4 or 5 star review?", "{rating}"),
        ("Predict the number of stars (1-5) for this review: {review}", "{rating}"),
        ("How positive is this review, from 1 star to 5 stars?\n{review}\n{options_}", "{rating}"),
    ),
    few_shot_patterns=DEFAULT_FEW_SHOT_PATTERNS,
))
