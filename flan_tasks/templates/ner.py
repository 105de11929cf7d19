"""Named-entity recognition as text-to-text: targets look like `person: A, B; location: C`."""
from flan_tasks.templates import FewShotPattern, TemplateFamily, register_family

NAMED_ENTITY_RECOGNITION = register_family(TemplateFamily(
    name="named_entity_recognition",
    description="List the people, locations, organizations and other names in a sentence.",
    templates=(
        ("Find the named entities in this sentence: {sentence}", "{entities}"),
        ("{sentence}\n\nList the people, locations and organizations mentioned above.", "{entities}"),
        ("Sentence: {sentence}\nWhat named entities does it contain?", "{entities}"),
        ("Extract the entities (person, location, organization, miscellaneous) from:\n{sentence}",
         "{entities}"),
        ("Which names of people, places and organizations appear in this text?\n{sentence}",
         "{entities}"),
        ("Tag the named entities.\n\n{sentence}", "{entities}"),
        ("{sentence}\nWho and what is named in this sentence?", "{entities}"),
        ("Identify every named entity and its type in the sentence below.\n{sentence}", "{entities}"),
        ("Text: {sentence}\nEntities:", "{entities}"),
        ("Read this sentence and list its entities by type: {sentence}", "{entities}"),
    ),
    few_shot_patterns=(
        FewShotPattern("", "", "\n", "\n\n"),
        FewShotPattern("Sentence: ", "Entities: ", "\n", "\n\n"),
        FewShotPattern("Q: ", "A: ", "\n", "\n\n"),
    ),
))
