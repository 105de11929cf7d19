"""Small synthetic datasets, generated deterministically in code, one per task family.

Sized and shaped so a tiny T5 learns them on a laptop CPU in minutes: short texts whose targets
follow from slots in the inputs (names, times, places, star-rated adjectives, expression trees).
"""
import random
import zlib
from typing import Callable, Dict, List

SPLIT_SIZES = {"train": 2000, "validation": 100}

NAMES = ("Anna", "Ben", "Carla", "Dan", "Eva", "Finn", "Gina", "Hugo", "Ines", "Jack", "Kim", "Leo",
         "Mia", "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Umar")
PLACES = ("the library", "the cafe", "the station", "the park", "the gym", "the office", "the cinema",
          "the museum", "the market", "the beach")
TIMES = ("9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm", "6 pm", "7 pm")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ITEMS = ("umbrella", "charger", "bike", "laptop", "camera", "book", "tent", "ladder")


def _rng(dataset: str, split: str) -> random.Random:
  return random.Random(zlib.crc32(f"{dataset}/{split}".encode()))


def _dialogue(rng: random.Random) -> Dict[str, str]:
  a, b = rng.sample(NAMES, 2)
  kind = rng.randrange(3)
  if kind == 0:
    place, time, day = rng.choice(PLACES), rng.choice(TIMES), rng.choice(DAYS)
    turns = [f"{a}: Hi {b}, shall we meet at {place} on {day}?",
             f"{b}: Sure. What time?", f"{a}: How about {time}?", f"{b}: {time} works. See you!"]
    summary = f"{a} and {b} will meet at {place} on {day} at {time}."
  elif kind == 1:
    item, day = rng.choice(ITEMS), rng.choice(DAYS)
    turns = [f"{a}: {b}, can I borrow your {item}?", f"{b}: Yes, when do you need it?",
             f"{a}: On {day}.", f"{b}: OK, I will bring it on {day}."]
    summary = f"{b} will lend {a} the {item} on {day}."
  else:
    place, day = rng.choice(PLACES), rng.choice(DAYS)
    turns = [f"{a}: Sorry {b}, I can't come to {place} on {day}.", f"{b}: No problem. Are you ill?",
             f"{a}: Yes, I have a cold.", f"{b}: Get well soon!"]
    summary = f"{a} is ill and will not go to {place} with {b} on {day}."
  return {"dialogue": "\n".join(turns), "summary": summary}


def _support_chat(rng: random.Random) -> Dict[str, str]:
  """Held-out dialogue style: a customer and an agent arrange a delivery or a refund."""
  name, day, time, item = rng.choice(NAMES), rng.choice(DAYS), rng.choice(TIMES), rng.choice(ITEMS)
  if rng.random() < 0.5:
    turns = ["Agent: Hello, how can I help?", f"{name}: My {item} has not arrived yet.",
             f"Agent: I am sorry. We can deliver it on {day} at {time}.", f"{name}: That is fine."]
    summary = f"{name}'s {item} will be delivered on {day} at {time}."
  else:
    turns = ["Agent: Good morning, what can I do for you?", f"{name}: My {item} is broken.",
             f"Agent: We will refund you by {day}.", f"{name}: Thank you."]
    summary = f"{name} will get a refund for the broken {item} by {day}."
  return {"dialogue": "\n".join(turns), "summary": summary}


PRODUCTS = ("dress", "jacket", "scarf", "shirt", "skirt", "sweater", "coat", "hat")
OPINIONS = {
    1: ("terrible", "awful", "a waste of money"),
    2: ("poor", "disappointing", "not worth it"),
    3: ("okay", "average", "fine but nothing special"),
    4: ("good", "nice", "worth the price"),
    5: ("excellent", "perfect", "absolutely wonderful"),
}
DISHES = ("pizza", "soup", "burger", "salad", "pasta", "curry")


def _review(rng: random.Random) -> Dict[str, str]:
  rating = rng.randint(1, 5)
  product = rng.choice(PRODUCTS)
  first, second = rng.sample(OPINIONS[rating], 2)
  return {"review": f"The {product} is {first}. Honestly, {second}.", "rating": str(rating)}


def _restaurant_review(rng: random.Random) -> Dict[str, str]:
  """Held-out review style: restaurant dishes instead of clothes."""
  rating = rng.randint(1, 5)
  dish = rng.choice(DISHES)
  first, second = rng.sample(OPINIONS[rating], 2)
  return {"review": f"We ordered the {dish}. It was {first}, {second}.", "rating": str(rating)}


def _expression(rng: random.Random, depth: int):
  if depth == 0 or rng.random() < 0.3:
    return rng.choice("abcdxyz") if rng.random() < 0.6 else str(rng.randint(1, 9))
  op = rng.choice("+-*")
  return (op, _expression(rng, depth - 1), _expression(rng, depth - 1))


def _prefix(expr) -> str:
  return expr if isinstance(expr, str) else f"({expr[0]} {_prefix(expr[1])} {_prefix(expr[2])})"


def _infix(expr, top: bool = True) -> str:
  if isinstance(expr, str):
    return expr
  text = f"{_infix(expr[1], False)} {expr[0]} {_infix(expr[2], False)}"
  return text if top else f"({text})"


def _code(rng: random.Random) -> Dict[str, str]:
  name = rng.choice(("f", "g", "h", "calc", "area", "score"))
  expr = _expression(rng, 2)
  return {"source_code": f"(define ({name}) {_prefix(expr)})",
          "target_code": f"def {name}(): return {_infix(expr)}"}


ORGS = ("Acme", "Globex", "Initech", "Umbrella Corp", "Hooli", "Vandelay Industries")
CITIES = ("Paris", "Berlin", "Madrid", "Rome", "Vienna", "Oslo", "Lisbon", "Prague")


def _ner(rng: random.Random) -> Dict[str, str]:
  person, org = rng.choice(NAMES), rng.choice(ORGS)
  city, other = rng.sample(CITIES, 2)
  kind = rng.randrange(3)
  if kind == 0:
    sentence = f"{person} flew from {city} to {other} to meet the {org} team ."
    entities = f"person: {person}; location: {city}, {other}; organization: {org}"
  elif kind == 1:
    sentence = f"{org} opened a new office in {city} ."
    entities = f"location: {city}; organization: {org}"
  else:
    sentence = f"{person} lives in {city} ."
    entities = f"person: {person}; location: {city}"
  return {"sentence": sentence, "entities": entities}


GENERATORS: Dict[str, Callable[[random.Random], Dict[str, str]]] = {
    "demo_dialogue": _dialogue,
    "demo_support": _support_chat,
    "demo_review": _review,
    "demo_restaurant": _restaurant_review,
    "demo_code": _code,
    "demo_ner": _ner,
}


def generate(dataset: str, split: str) -> Dict[str, List[str]]:
  """Columns of the demo dataset's split; the same every call and on every machine."""
  if dataset not in GENERATORS:
    raise ValueError(f"unknown demo dataset {dataset!r}; known: {sorted(GENERATORS)}")
  if split not in SPLIT_SIZES:
    raise ValueError(f"demo dataset {dataset!r} has no split {split!r}; splits: {list(SPLIT_SIZES)}")
  rng = _rng(dataset, split)
  rows = [GENERATORS[dataset](rng) for _ in range(SPLIT_SIZES[split])]
  return {key: [row[key] for row in rows] for key in rows[0]}
