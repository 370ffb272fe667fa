"""The built-in math target domain: generated grade-school word problems in GSM8K's format.

Each solution is a few sentences, every computation carrying a calculator annotation
(``48/2 = <<48/2=24>>24``), and ends with the line ``#### <answer>``; answers are integers and
every division is exact by construction. Generated here, so there is no licence to inherit.

Splits: a problem's identity is (template id, the numbers in its question). It belongs to ``test``
iff a SHA-256 hash of that identity falls in a 10% bucket, else to ``train``, so the two never share
a question whatever the seed. Two templates (``RESERVED_TEMPLATES``) appear only in
``test_new_templates``, to measure transfer to problem types never trained on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from learnforget.data.types import Pair

MathSplit = Literal["train", "test", "test_new_templates"]

TEST_PERCENT = 10  # share of (template, numbers) identities that belong to the test split
MAX_MISSES_IN_A_ROW = 20_000  # give up when the split's problems are (nearly) exhausted

# fmt: off
NAMES = (
    "Aisha", "Ben", "Carlos", "Dana", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira",
    "Leo", "Maya", "Nikos", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
    "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Chloe", "Diego", "Emma", "Felix", "Hana",
    "Ivan", "Julia", "Kofi", "Lena", "Mateo", "Nora", "Omar",
)
ITEMS = (
    "pencils", "notebooks", "apples", "stickers", "cupcakes", "markers", "comic books",
    "toy cars", "candles", "muffins", "erasers", "postcards", "oranges", "marbles",
)
# fmt: on


@dataclass(frozen=True)
class MathProblem:
    """A word problem, its worked solution (ending with ``#### <answer>``) and the answer."""

    question: str
    solution: str
    answer: str


@dataclass(frozen=True)
class _Draw:
    """One sampled problem before formatting: its numbers (its identity), text and steps."""

    numbers: tuple[int, ...]
    question: str
    steps: tuple[str, ...]
    answer: int


def _calc(expression: str, value: int) -> str:
    """A computation as GSM8K writes it: ``3*4 = <<3*4=12>>12``."""
    return f"{expression} = <<{expression}={value}>>{value}"


def _two(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    """Two different entries of a pool."""
    first, second = rng.sample(pool, 2)
    return first, second


def _shopping_change(rng: random.Random) -> _Draw:
    a, p, b, q = rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 9), rng.randint(2, 15)
    name, (first, second) = rng.choice(NAMES), _two(rng, ITEMS)
    x, y = a * p, b * q
    bill = next(note for note in (20, 50, 100, 200, 500) if note > x + y)
    question = (
        f"{name} buys {a} {first} at ${p} each and {b} {second} at ${q} each. {name} pays with a "
        f"${bill} bill. How much change, in dollars, does {name} get back?"
    )
    steps = (
        f"The {first} cost {_calc(f'{a}*{p}', x)} dollars.",
        f"The {second} cost {_calc(f'{b}*{q}', y)} dollars.",
        f"Altogether {name} spends {_calc(f'{x}+{y}', x + y)} dollars.",
        f"The change is {_calc(f'{bill}-{x + y}', bill - x - y)} dollars.",
    )
    return _Draw((a, p, b, q), question, steps, bill - x - y)


def _trip_distance(rng: random.Random) -> _Draw:
    s1, h1 = rng.randrange(15, 80, 5), rng.randint(1, 8)
    s2, h2 = rng.randrange(15, 80, 5), rng.randint(1, 8)
    name = rng.choice(NAMES)
    question = (
        f"{name} drives at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for "
        f"{h2} hours. How many miles does {name} drive in total?"
    )
    d1, d2 = s1 * h1, s2 * h2
    steps = (
        f"In the first part {name} drives {_calc(f'{s1}*{h1}', d1)} miles.",
        f"In the second part {name} drives {_calc(f'{s2}*{h2}', d2)} miles.",
        f"In total {name} drives {_calc(f'{d1}+{d2}', d1 + d2)} miles.",
    )
    return _Draw((s1, h1, s2, h2), question, steps, d1 + d2)


def _ages(rng: random.Random) -> _Draw:
    while True:
        a, k, d, y = rng.randint(3, 30), rng.randint(2, 4), rng.randint(1, 20), rng.randint(1, 10)
        if d < k * a:
            break
    first, second, third = rng.sample(NAMES, 3)
    question = (
        f"{first} is {a} years old. {second} is {k} times as old as {first}, and {third} is {d} "
        f"years younger than {second}. What will the sum of their three ages be in {y} years?"
    )
    b, c = k * a, k * a - d
    total = a + b + c
    steps = (
        f"{second} is {_calc(f'{k}*{a}', b)} years old.",
        f"{third} is {_calc(f'{b}-{d}', c)} years old.",
        f"Their ages now add up to {_calc(f'{a}+{b}+{c}', total)} years.",
        f"In {y} years each is {y} years older, so the sum grows by {_calc(f'3*{y}', 3 * y)}.",
        f"The sum will be {_calc(f'{total}+{3 * y}', total + 3 * y)} years.",
    )
    return _Draw((a, k, d, y), question, steps, total + 3 * y)


def _sharing(rng: random.Random) -> _Draw:
    m, each, g = rng.randint(2, 9), rng.randint(2, 25), rng.randint(1, 40)
    total = m * each + g
    name, friend = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    question = (
        f"{name} has {total} {item}. {name} gives {g} of them to {friend} and shares the rest "
        f"equally among {m} classmates. How many {item} does each classmate get?"
    )
    rest = total - g
    steps = (
        f"After giving some to {friend}, {name} has {_calc(f'{total}-{g}', rest)} {item} left.",
        f"Each classmate gets {_calc(f'{rest}/{m}', each)} {item}.",
    )
    return _Draw((total, g, m), question, steps, each)


def _discount(rng: random.Random) -> _Draw:
    price, rate = rng.randrange(20, 1001, 20), rng.choice((5, 10, 15, 20, 25, 30, 35, 40, 50))
    count = rng.randint(2, 12)
    item = rng.choice(ITEMS)
    question = (
        f"A box of {item} costs ${price}. During a sale the price is reduced by {rate}%. "
        f"How much do {count} boxes of {item} cost during the sale, in dollars?"
    )
    off = price * rate // 100
    new = price - off
    steps = (
        f"The discount is {_calc(f'{price}*{rate}/100', off)} dollars per box.",
        f"A box costs {_calc(f'{price}-{off}', new)} dollars during the sale.",
        f"{count} boxes cost {_calc(f'{count}*{new}', count * new)} dollars.",
    )
    return _Draw((price, rate, count), question, steps, count * new)


def _practice_hours(rng: random.Random) -> _Draw:
    while True:
        minutes, tasks, days = rng.randrange(5, 125, 5), rng.randint(2, 9), rng.randint(2, 30)
        if minutes * tasks * days % 60 == 0:
            break
    name = rng.choice(NAMES)
    question = (
        f"{name} practises {tasks} songs every day, spending {minutes} minutes on each song. "
        f"How many hours does {name} practise in {days} days?"
    )
    per_day = minutes * tasks
    total = per_day * days
    steps = (
        f"Each day {name} practises {_calc(f'{minutes}*{tasks}', per_day)} minutes.",
        f"In {days} days that is {_calc(f'{per_day}*{days}', total)} minutes.",
        f"That is {_calc(f'{total}/60', total // 60)} hours.",
    )
    return _Draw((minutes, tasks, days), question, steps, total // 60)


def _earnings_left(rng: random.Random) -> _Draw:
    while True:
        wage, hours, days = rng.randint(8, 30), rng.randint(2, 8), rng.randint(3, 7)
        spent = rng.randrange(5, 400, 5)
        if spent < wage * hours * days:
            break
    name = rng.choice(NAMES)
    question = (
        f"{name} earns ${wage} an hour and works {hours} hours a day for {days} days. Then "
        f"{name} spends ${spent} on a new bike. How many dollars does {name} have left?"
    )
    daily = wage * hours
    earned = daily * days
    steps = (
        f"{name} earns {_calc(f'{wage}*{hours}', daily)} dollars a day.",
        f"In {days} days {name} earns {_calc(f'{daily}*{days}', earned)} dollars.",
        f"{name} has {_calc(f'{earned}-{spent}', earned - spent)} dollars left.",
    )
    return _Draw((wage, hours, days, spent), question, steps, earned - spent)


def _harvest(rng: random.Random) -> _Draw:
    while True:
        rows, per_row, fruit = rng.randint(3, 15), rng.randint(4, 20), rng.randint(2, 12)
        box, price = rng.choice((4, 5, 6, 8, 10, 12)), rng.randint(2, 9)
        if rows * per_row * fruit % box == 0:
            break
    name = rng.choice(NAMES)
    question = (
        f"{name} has {rows} rows of tomato plants with {per_row} plants in each row. Each plant "
        f"gives {fruit} tomatoes. {name} packs the tomatoes in boxes of {box} and sells each box "
        f"for ${price}. How many dollars does {name} earn?"
    )
    plants = rows * per_row
    tomatoes = plants * fruit
    boxes = tomatoes // box
    steps = (
        f"There are {_calc(f'{rows}*{per_row}', plants)} plants.",
        f"They give {_calc(f'{plants}*{fruit}', tomatoes)} tomatoes.",
        f"That fills {_calc(f'{tomatoes}/{box}', boxes)} boxes.",
        f"{name} earns {_calc(f'{boxes}*{price}', boxes * price)} dollars.",
    )
    return _Draw((rows, per_row, fruit, box, price), question, steps, boxes * price)


def _school_clubs(rng: random.Random) -> _Draw:
    while True:
        students = rng.randrange(20, 2001, 20)
        percent = rng.choice((10, 20, 25, 30, 40, 50, 60, 70, 75, 80))
        k = rng.randint(2, 8)
        if (students - students * percent // 100) % k == 0:
            break
    question = (
        f"A school has {students} students and {percent}% of them are girls. One in every {k} "
        f"boys plays chess. How many boys do not play chess?"
    )
    girls = students * percent // 100
    boys = students - girls
    chess = boys // k
    steps = (
        f"There are {_calc(f'{students}*{percent}/100', girls)} girls.",
        f"There are {_calc(f'{students}-{girls}', boys)} boys.",
        f"{_calc(f'{boys}/{k}', chess)} boys play chess.",
        f"So {_calc(f'{boys}-{chess}', boys - chess)} boys do not play chess.",
    )
    return _Draw((students, percent, k), question, steps, boys - chess)


def _baking(rng: random.Random) -> _Draw:
    batch = rng.choice((6, 8, 10, 12, 15, 16, 18, 20, 24, 30, 36))
    batches, flour, eggs = rng.randint(2, 20), rng.randint(1, 6), rng.randint(2, 5)
    cookies = batch * batches
    name = rng.choice(NAMES)
    question = (
        f"One batch of {name}'s cookies makes {batch} cookies and needs {flour} cups of flour and "
        f"{eggs} eggs. {name} wants to bake {cookies} cookies. How many cups of flour and eggs "
        f"does {name} need altogether?"
    )
    total_flour, total_eggs = batches * flour, batches * eggs
    steps = (
        f"{name} needs {_calc(f'{cookies}/{batch}', batches)} batches.",
        f"That takes {_calc(f'{batches}*{flour}', total_flour)} cups of flour.",
        f"It also takes {_calc(f'{batches}*{eggs}', total_eggs)} eggs.",
        f"Altogether that is {_calc(f'{total_flour}+{total_eggs}', total_flour + total_eggs)} "
        "cups of flour and eggs.",
    )
    return _Draw((batch, cookies, flour, eggs), question, steps, total_flour + total_eggs)


def _saving_weeks(rng: random.Random) -> _Draw:
    saved, weekly, weeks = rng.randrange(10, 201, 5), rng.randint(5, 50), rng.randint(2, 30)
    target = saved + weekly * weeks
    name = rng.choice(NAMES)
    question = (
        f"{name} wants to buy a bicycle that costs ${target}. {name} has already saved ${saved} "
        f"and saves ${weekly} every week. How many weeks will it take to have enough money?"
    )
    missing = target - saved
    steps = (
        f"{name} still needs {_calc(f'{target}-{saved}', missing)} dollars.",
        f"That takes {_calc(f'{missing}/{weekly}', weeks)} weeks.",
    )
    return _Draw((target, saved, weekly), question, steps, weeks)


def _bus_trips(rng: random.Random) -> _Draw:
    seats, trips, fare = rng.randint(10, 60), rng.randint(2, 12), rng.randrange(20, 205, 5)
    people = seats * trips
    question = (
        f"{people} people need to get to a festival. A shuttle bus carries {seats} people per "
        f"trip, and each trip costs ${fare}. How many dollars do all the trips cost?"
    )
    steps = (
        f"The bus must make {_calc(f'{people}/{seats}', trips)} trips.",
        f"The trips cost {_calc(f'{trips}*{fare}', trips * fare)} dollars.",
    )
    return _Draw((people, seats, fare), question, steps, trips * fare)


def _rope_pieces(rng: random.Random) -> _Draw:
    while True:
        feet, piece = rng.randint(2, 40), rng.choice((2, 3, 4, 6, 8, 9, 12, 16, 18, 24))
        pieces = feet * 12 // piece
        given = rng.randint(1, 30)
        if feet * 12 % piece == 0 and given < pieces:
            break
    name, friend = rng.sample(NAMES, 2)
    question = (
        f"{name} has a rope {feet} feet long and cuts it into pieces {piece} inches long. "
        f"{name} gives {given} pieces to {friend}. How many pieces does {name} keep?"
    )
    inches = feet * 12
    steps = (
        f"The rope is {_calc(f'{feet}*12', inches)} inches long.",
        f"It makes {_calc(f'{inches}/{piece}', pieces)} pieces.",
        f"{name} keeps {_calc(f'{pieces}-{given}', pieces - given)} pieces.",
    )
    return _Draw((feet, piece, given), question, steps, pieces - given)


def _reading_days(rng: random.Random) -> _Draw:
    while True:
        first, fewer, left = rng.randint(5, 40), rng.randint(1, 15), rng.randint(1, 200)
        if fewer < 2 * first:
            break
    second, third = 2 * first, 2 * first - fewer
    read = first + second + third
    pages = read + left
    name = rng.choice(NAMES)
    question = (
        f"{name}'s book has {pages} pages. {name} reads {first} pages on Monday, twice as many on "
        f"Tuesday, and {fewer} pages fewer on Wednesday than on Tuesday. How many pages are left?"
    )
    steps = (
        f"On Tuesday {name} reads {_calc(f'2*{first}', second)} pages.",
        f"On Wednesday {name} reads {_calc(f'{second}-{fewer}', third)} pages.",
        f"{name} has read {_calc(f'{first}+{second}+{third}', read)} pages.",
        f"There are {_calc(f'{pages}-{read}', left)} pages left.",
    )
    return _Draw((pages, first, fewer), question, steps, left)


def _fuel_cost(rng: random.Random) -> _Draw:
    per_gallon, gallons = rng.randint(15, 40), rng.randint(2, 20)
    price, tolls = rng.randint(2, 6), rng.randint(1, 30)
    miles = per_gallon * gallons
    name = rng.choice(NAMES)
    question = (
        f"{name}'s car goes {per_gallon} miles on a gallon of gas, and gas costs ${price} a "
        f"gallon. {name} drives {miles} miles and pays ${tolls} in tolls. How many dollars does "
        f"the trip cost?"
    )
    fuel = gallons * price
    steps = (
        f"The trip uses {_calc(f'{miles}/{per_gallon}', gallons)} gallons of gas.",
        f"The gas costs {_calc(f'{gallons}*{price}', fuel)} dollars.",
        f"With the tolls the trip costs {_calc(f'{fuel}+{tolls}', fuel + tolls)} dollars.",
    )
    return _Draw((per_gallon, miles, price, tolls), question, steps, fuel + tolls)


TEMPLATES: dict[str, Callable[[random.Random], _Draw]] = {
    "shopping_change": _shopping_change,
    "trip_distance": _trip_distance,
    "ages": _ages,
    "sharing": _sharing,
    "discount": _discount,
    "practice_hours": _practice_hours,
    "earnings_left": _earnings_left,
    "harvest": _harvest,
    "school_clubs": _school_clubs,
    "baking": _baking,
    "saving_weeks": _saving_weeks,
    "bus_trips": _bus_trips,
    "rope_pieces": _rope_pieces,
    "reading_days": _reading_days,
    "fuel_cost": _fuel_cost,
}
RESERVED_TEMPLATES = ("reading_days", "fuel_cost")  # only ever in test_new_templates


def is_test_identity(template: str, numbers: tuple[int, ...]) -> bool:
    """Whether a problem identity belongs to the test split (a stable hash, 10% bucket)."""
    digest = hashlib.sha256(repr((template, numbers)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT


def split_of(template: str, numbers: tuple[int, ...]) -> MathSplit:
    """The one split a problem identity belongs to."""
    if template in RESERVED_TEMPLATES:
        return "test_new_templates"
    return "test" if is_test_identity(template, numbers) else "train"


def _problems_with_identity(
    split: MathSplit, n: int, seed: int
) -> list[tuple[tuple[str, tuple[int, ...]], MathProblem]]:
    """``n`` distinct problems of one split, each with its identity (template, numbers)."""
    if split not in ("train", "test", "test_new_templates"):
        raise ValueError(f"split must be 'train', 'test' or 'test_new_templates', not {split!r}")
    reserved = split == "test_new_templates"
    names = sorted(t for t in TEMPLATES if (t in RESERVED_TEMPLATES) == reserved)
    rng = random.Random(f"math-{split}-{seed}")
    seen: set[tuple[str, tuple[int, ...]]] = set()
    problems = []
    misses = 0  # draws in a row that were a repeat or of another split
    while len(problems) < n:
        if misses > MAX_MISSES_IN_A_ROW:
            raise ValueError(
                f"could not draw {n} distinct {split} problems (got {len(problems)}); ask for fewer"
            )
        template = rng.choice(names)
        draw = TEMPLATES[template](rng)
        identity = (template, draw.numbers)
        if identity in seen or split_of(template, draw.numbers) != split:
            misses += 1
            continue
        misses = 0
        seen.add(identity)
        solution = "\n".join((*draw.steps, f"#### {draw.answer}"))
        problems.append((identity, MathProblem(draw.question, solution, str(draw.answer))))
    return problems


def math_problems(split: MathSplit, n: int, seed: int = 0) -> list[MathProblem]:
    """``n`` distinct word problems of one split, reproducible from ``seed``."""
    return [problem for _, problem in _problems_with_identity(split, n, seed)]


def math_problem_identities(split: MathSplit, n: int, seed: int = 0) -> list[tuple]:
    """The identities (template id, numbers) of ``math_problems(split, n, seed)``, in order."""
    return [identity for identity, _ in _problems_with_identity(split, n, seed)]


def math_prompt(question: str) -> str:
    """The prompt a model sees for a word problem."""
    return f"Question: {question}\nAnswer:"


def math_ift_pairs(split: MathSplit, n: int, seed: int = 0) -> list[Pair]:
    """Prompt/response pairs: ``math_prompt(question)`` -> ``" " + solution``."""
    return [Pair(math_prompt(p.question), " " + p.solution) for p in math_problems(split, n, seed)]


def math_documents(split: MathSplit, n: int, seed: int = 0) -> list[str]:
    """Prompt and response as one text, for continued pretraining and pretraining mixes."""
    return [pair.prompt + pair.response for pair in math_ift_pairs(split, n, seed)]
