"""The synthetic tool catalogue: value pools, tool schemas and request templates.

Every tool belongs to one split. Train tools carry train phrasings only, held-out tools held-out phrasings
only, so the held-out split tests unseen tools *and* unseen requests. Descriptions are kept short: a
sample's prompt shows only its own 1-3 tools and must stay near 135 tokens for a 135M model.

A template is request text with ``{param}`` slots, optionally paired with arguments its wording fixes
(``("Unlock the {door} door.", {"locked": False})``). A call's arguments are the required parameters plus
the optional ones the template mentions; every required parameter must appear (checked at import).
How a slot is worded is set by the parameter's value pool (``synth.py``): dates read "on 2026-03-16",
people counts "4 people", durations "90 minutes", so the reasoning kinds can swap in "the day after
tomorrow", "me and two kids" or "1.5 hours" without changing the sentence around them.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "dev", "heldout")  # dev: procedural tools only (synth_procedural.py)

# --- value pools (plain lists; synth.py adds the generated ones: dates, counts, units, ids) -------------
CITIES = (
    "Paris", "Rome", "Oslo", "Lima", "Tokyo", "Berlin", "Madrid", "Lisbon", "Dublin", "Vienna", "Prague",
    "Warsaw", "Athens", "Cairo", "Nairobi", "Seoul", "Osaka", "Sydney", "Toronto", "Denver", "Chicago",
    "Boston", "Austin", "Seattle", "Miami", "Mumbai", "Bangkok", "Hanoi", "Manila", "Santiago", "Bogota",
    "Quito", "Reykjavik", "Helsinki", "Stockholm", "Zurich", "Munich", "Milan", "Porto", "Seville",
    "Krakow", "Budapest", "Istanbul", "Dubai",
)  # fmt: skip
PEOPLE_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
    "Maya", "Nico", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yuki", "Zoe",
    "Amir", "Chloe", "Dario", "Emma", "Felix", "Gita", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Marco",
)  # fmt: skip
COUNTRIES = (
    "France", "Japan", "Brazil", "Canada", "India", "Kenya", "Mexico", "Norway", "Vietnam", "Egypt", "Peru",
    "Chile", "Turkey", "Spain", "Germany", "Australia", "Thailand", "Morocco",
)  # fmt: skip
TICKERS = ("AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "NFLX", "IBM", "ORCL", "INTC", "AMD")
CRYPTOS = ("BTC", "ETH", "SOL", "ADA", "XRP", "DOGE", "DOT")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "INR")
PRODUCTS = (
    "wireless earbuds", "yoga mat", "coffee grinder", "running shoes", "desk lamp", "phone charger",
    "water bottle", "hiking backpack", "mechanical keyboard", "air fryer", "electric kettle", "bike helmet",
    "camping tent", "sunglasses", "office chair", "USB-C cable",
)  # fmt: skip
ITEMS = (  # countable, plural: "4 packs of 6 granola bars"
    "AA batteries", "ballpoint pens", "tennis balls", "granola bars", "light bulbs", "sticky notes",
    "paper cups", "candles", "sports socks", "dish sponges",
)  # fmt: skip
MOVIES = (
    "The Silent Harbor", "Neon Tide", "Paper Moons", "The Last Orchard", "Glass Mountain", "Midnight Ferry",
    "Red Lantern Road", "Echoes of Mars", "The Quiet Fox", "Winter Signal",
)  # fmt: skip
ARTISTS = (
    "Luna Park", "The Velvet Owls", "Mira Sol", "Jonah Reed", "Static Bloom", "Ada Vale", "North Avenue",
    "Kai Moreno", "Polar Lights", "Sara Quill",
)  # fmt: skip
SONGS = (
    "Slow Rivers", "City of Glass", "Blue Static", "Run to the Coast", "Late Bloomer", "Summer Code",
    "Lanterns", "After the Rain", "Northern Line", "Gold Dust",
)  # fmt: skip
PLAYLISTS = ("Morning Run", "Focus", "Road Trip", "Dinner Jazz", "Sunday Chill", "Gym Mix")
RESTAURANTS = (
    "Blue Fig", "Casa Lupa", "The Olive Room", "Sakura House", "Little Saigon", "Bistro Nord",
    "Green Table", "Taco Loco", "The Copper Pot", "Pasta Nostra",
)  # fmt: skip
DISHES = (
    "margherita pizza", "pad thai", "caesar salad", "veggie burger", "miso soup", "chicken curry",
    "falafel wrap", "sushi platter", "garlic bread", "mushroom risotto", "grilled salmon", "beef stew",
)  # fmt: skip
FOODS = (
    "banana", "oatmeal", "brown rice", "chicken breast", "avocado", "almonds", "greek yogurt", "salmon",
    "pasta", "lentils", "cheddar cheese", "dark chocolate",
)  # fmt: skip
INGREDIENTS = (
    "chickpeas", "spinach", "tomatoes", "eggs", "rice", "mushrooms", "tofu", "potatoes", "lemon", "garlic",
)  # fmt: skip
GROCERIES = (
    "lemons", "eggs", "apples", "avocados", "tomatoes", "onions", "bananas", "yogurt cups", "carrots",
)  # fmt: skip
EVENT_TITLES = (
    "Team sync", "Dentist appointment", "Project review", "Budget meeting", "Yoga class", "Book club",
    "Quarterly planning", "Design workshop", "Coffee with Nora", "Parent-teacher meeting",
)  # fmt: skip
REMINDERS = (
    "call the bank", "water the plants", "pick up the dry cleaning", "renew my passport", "buy milk",
    "pay the rent", "send the invoice", "book a haircut", "return the library books",
)  # fmt: skip
MESSAGES = (
    "I'm running late", "See you at seven", "Can you call me back?", "Happy birthday!",
    "The meeting moved to Friday", "Dinner is ready", "Don't forget the tickets", "Thanks for today",
)  # fmt: skip
SUBJECTS = (
    "Project update", "Invoice for March", "Weekend plans", "Meeting notes", "Trip itinerary", "Budget draft",
)  # fmt: skip
NOTES = ("rent share", "concert tickets", "dinner last night", "birthday gift", "taxi fare", "groceries")
GROUP_NAMES = ("Book Club", "Hiking Crew", "Family", "Project Falcon", "Soccer Team", "Roommates")
TIMER_LABELS = ("pasta", "eggs", "laundry", "tea", "pizza", "bread")
STREETS = (
    "12 Elm Street", "48 Harbor Road", "7 Mill Lane", "305 Oak Avenue", "19 Station Road", "88 King Street",
    "5 Rose Court", "240 Lake Drive",
)  # fmt: skip
COUPONS = ("SAVE10", "WELCOME15", "SPRING20", "FREESHIP", "VIP25")

# Pools whose slot text is the value itself: parallel calls can list them ("in Paris and Rome") and the
# context kind can point at one ("the second one").
ENTITY_POOLS: dict[str, tuple[str, ...]] = {
    "city": CITIES,
    "person": PEOPLE_NAMES,
    "country": COUNTRIES,
    "ticker": TICKERS,
    "crypto": CRYPTOS,
    "product": PRODUCTS,
    "movie": MOVIES,
    "artist": ARTISTS,
    "song": SONGS,
    "restaurant": RESTAURANTS,
    "dish": DISHES,
    "food": FOODS,
}
# Other list pools: drawn from, but not pointed at.
LIST_POOLS: dict[str, tuple[str, ...]] = {
    **ENTITY_POOLS,
    "currency": CURRENCIES,
    "item": ITEMS,
    "playlist": PLAYLISTS,
    "ingredient": INGREDIENTS,
    "event_title": EVENT_TITLES,
    "reminder": REMINDERS,
    "message": MESSAGES,
    "subject": SUBJECTS,
    "note": NOTES,
    "group": GROUP_NAMES,
    "timer_label": TIMER_LABELS,
    "coupon": COUPONS,
}
# Pools synth.py generates (numbers, dates, ids, objects).
GENERATED_POOLS = (
    "date", "time", "count", "people", "units", "minutes", "seconds", "meters", "ml", "grams", "price",
    "amount", "loan", "rate", "temperature", "brightness", "tip", "steps", "year", "order_id", "address",
    "street_address", "grocery_list", "ident", "email",
)  # fmt: skip


# --- declarations ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    type: str  # JSON Schema type: string | integer | number | boolean | array | object
    desc: str  # "" = no description
    pool: str | None = None  # value pool; None for enums and booleans
    enum: tuple[Any, ...] | None = None  # allowed values (for arrays: of the items)
    say: dict[Any, tuple[str, ...]] | None = None  # enum / boolean value -> phrasings
    required: bool = True
    default: Any = None
    noun: str = ""  # "count" pool: slot reads "3 nights"
    lo: int = 0  # "count" pool range
    hi: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # more JSON Schema (items, properties)

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": self.type}
        if self.desc:  # only where the name does not say it all: prompts must stay short
            s["description"] = self.desc
        if self.enum is not None and self.type != "array":
            s["enum"] = list(self.enum)
        if self.default is not None:
            s["default"] = self.default
        s.update(self.extra)
        return s


@dataclass(frozen=True)
class Template:
    text: str
    fixed: dict[str, Any]
    slots: tuple[str, ...]  # parameter names in order of appearance
    parts: tuple[tuple[str, str | None], ...]  # (literal, slot or None)


@dataclass(frozen=True)
class Tool:
    name: str
    domain: str
    desc: str
    params: tuple[Param, ...]
    templates: tuple[Template, ...]
    split: str
    fan: str | None = None  # entity parameter a parallel request can list ("in Paris and Rome")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"tool {self.name!r} has no parameter {name!r}")

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.desc,
            "parameters": {
                "type": "object",
                "properties": {p.name: p.schema() for p in self.params},
                "required": [p.name for p in self.params if p.required],
            },
        }


def _p(name: str, type_: str, desc: str, *, opt: bool = False, default: Any = None, **kw: Any) -> Param:
    return Param(name, type_, desc, required=not opt and default is None, default=default, **kw)


def _str(name: str, desc: str, pool: str, **kw: Any) -> Param:
    return _p(name, "string", desc, pool=pool, **kw)


def _int(name: str, desc: str, pool: str, **kw: Any) -> Param:
    return _p(name, "integer", desc, pool=pool, **kw)


def _num(name: str, desc: str, pool: str, **kw: Any) -> Param:
    return _p(name, "number", desc, pool=pool, **kw)


def _enum(name: str, desc: str, say: dict[str, tuple[str, ...]], **kw: Any) -> Param:
    return _p(name, "string", desc, enum=tuple(say), say=say, **kw)


def _bool(name: str, desc: str, say: dict[bool, tuple[str, ...]], **kw: Any) -> Param:
    return _p(name, "boolean", desc, say=say, **kw)


def _list(name: str, desc: str, pool: str, **kw: Any) -> Param:
    return _p(name, "array", desc, pool=pool, extra={"items": {"type": "string"}}, **kw)


def _enum_list(name: str, desc: str, say: dict[str, tuple[str, ...]], **kw: Any) -> Param:
    items = {"type": "string", "enum": list(say)}
    return _p(name, "array", desc, enum=tuple(say), say=say, extra={"items": items}, **kw)


def _template(text: str | tuple[str, dict[str, Any]]) -> Template:
    text, fixed = (text, {}) if isinstance(text, str) else text
    parts = tuple((lit, slot) for lit, slot, _, _ in string.Formatter().parse(text))
    slots = tuple(s for _, s in parts if s is not None)
    return Template(text=text, fixed=dict(fixed), slots=slots, parts=parts)


def _tool(
    name: str,
    domain: str,
    desc: str,
    params: list[Param],
    templates: list[str | tuple[str, dict[str, Any]]],
    *,
    split: str = "train",
    fan: str | None = None,
) -> Tool:
    return Tool(name, domain, desc, tuple(params), tuple(_template(t) for t in templates), split, fan)


_ROOMS = {
    "living_room": ("living room", "lounge"),
    "kitchen": ("kitchen",),
    "bedroom": ("bedroom",),
    "bathroom": ("bathroom",),
    "office": ("office", "study"),
    "hallway": ("hallway",),
}
_DATE = "YYYY-MM-DD"
_TIME = "HH:MM"

# --- the catalogue: 11 domains, 64 tools, 16 held out (one or two per domain) ---------------------------
TOOLS: tuple[Tool, ...] = (
    # weather
    _tool("get_current_weather", "weather", "Current weather in a city.",
          [_str("city", "", "city"),
           _enum("unit", "", {"celsius": ("in Celsius", "in degrees Celsius"),
                                              "fahrenheit": ("in Fahrenheit", "in degrees Fahrenheit")},
                 default="celsius")],
          ["What's the weather like in {city} right now?",
           "How warm is it in {city} at the moment? Give it to me {unit}.",
           "Tell me the current conditions in {city} {unit}.",
           "Is it raining in {city} right now?"], fan="city"),
    _tool("get_forecast", "weather", "Weather forecast for the coming days.",
          [_str("city", "", "city"),
           _int("days", "1-7", "count", lo=2, hi=7, noun="days", default=3)],
          ["What's the forecast for {city} over the next {days}?",
           "Will it rain in {city} in the coming days?",
           "Forecast for {city}, next {days}, please.",
           "I need the weather forecast for {city}."], fan="city"),
    _tool("get_air_quality", "weather", "Air quality index of a city.",
          [_str("city", "", "city")],
          ["How clean is the air in {city} today?",
           "What's the air quality index in {city}?",
           "Check the pollution level in {city}."], fan="city"),
    _tool("get_uv_index", "weather", "UV index for a city on a date.",
          [_str("city", "", "city"), _str("date", _DATE, "date")],
          ["What's the UV index in {city} {date}?",
           "How strong will the sun be in {city} {date}?",
           "UV level for {city} {date}, please."], fan="city"),
    _tool("get_weather_alerts", "weather", "Active weather warnings for a city.",
          [_str("city", "", "city"),
           _enum("severity", "minimum", {"minor": ("minor",), "moderate": ("moderate",),
                                                  "severe": ("severe",)}, opt=True)],
          ["Are there any {severity} weather warnings for {city}?",
           "List active storm alerts around {city}.",
           "Any weather alerts I should know about in {city}?"], split="heldout", fan="city"),
    _tool("get_sunrise_sunset", "weather", "Sunrise and sunset times.",
          [_str("city", "", "city"), _str("date", _DATE, "date")],
          ["When does the sun rise and set in {city} {date}?",
           "I'd like sunrise and sunset times for {city} {date}.",
           "Daylight hours in {city} {date}?"], split="heldout", fan="city"),
    # travel
    _tool("search_flights", "travel", "Search flights between two cities.",
          [_str("origin", "", "city"), _str("destination", "", "city"),
           _str("date", _DATE, "date"),
           _int("passengers", "", "people", default=1),
           _enum("cabin", "", {"economy": ("economy",), "premium_economy": ("premium economy",),
                                          "business": ("business class",)}, default="economy")],
          ["Find flights from {origin} to {destination} {date}.",
           "Search {cabin} flights from {origin} to {destination} {date} for {passengers}.",
           "I need to fly {origin} to {destination} {date}, {cabin}.",
           "Look up flights to {destination} from {origin} {date} for {passengers}."], fan="destination"),
    _tool("book_hotel", "travel", "Book a hotel room.",
          [_str("city", "", "city"), _str("check_in", _DATE, "date"),
           _int("nights", "", "count", lo=2, hi=10, noun="nights"),
           _int("guests", "", "people", default=1)],
          ["Book a hotel in {city} for {nights}, checking in {check_in}.",
           "I need a room in {city} {check_in} for {nights} for {guests}.",
           "Reserve {nights} at a hotel in {city}, arriving {check_in}."], fan="city"),
    _tool("rent_car", "travel", "Rent a car.",
          [_str("city", "", "city"), _str("pickup_date", _DATE, "date"),
           _int("days", "", "count", lo=2, hi=14, noun="days"),
           _enum("car_type", "", {"compact": ("a compact car", "a small car"), "suv": ("an SUV",),
                                          "van": ("a van",)}, default="compact")],
          ["Rent {car_type} in {city} {pickup_date} for {days}.",
           "I want to hire a car in {city} for {days}, pickup {pickup_date}.",
           "Car rental in {city} {pickup_date}, {days}, {car_type} please."], fan="city"),
    _tool("get_visa_requirements", "travel", "Visa rules for a trip.",
          [_str("passport_country", "", "country"),
           _str("destination", "", "country")],
          ["I hold a passport from {passport_country}. Do I need a visa for {destination}?",
           "What are the entry requirements for {destination} if my passport is from {passport_country}?",
           "Check visa requirements: passport {passport_country}, going to {destination}."],
          fan="destination"),
    _tool("book_train", "travel", "Book train seats.",
          [_str("origin", "", "city"), _str("destination", "", "city"),
           _str("date", _DATE, "date"), _int("seats", "", "people", default=1),
           _enum("seat_class", "", {"standard": ("standard class",), "first": ("first class",)},
                 default="standard")],
          ["Get me train tickets from {origin} to {destination} {date} for {seats}.",
           "Reserve {seat_class} rail seats between {origin} and {destination} {date}.",
           "I'd like to go by train from {origin} to {destination} {date}, {seat_class}, for {seats}."],
          split="heldout", fan="destination"),
    # finance
    _tool("get_stock_price", "finance", "Latest price of a stock.",
          [_str("ticker", "", "ticker")],
          ["What's {ticker} trading at?",
           "Get the latest share price of {ticker}.",
           "How much is one {ticker} share right now?",
           "Stock quote for {ticker}, please."], fan="ticker"),
    _tool("convert_currency", "finance", "Convert an amount between currencies.",
          [_num("amount", "", "amount"), _str("from_currency", "ISO code", "currency"),
           _str("to_currency", "ISO code", "currency")],
          ["Convert {amount} {from_currency} to {to_currency}.",
           "How much is {amount} {from_currency} in {to_currency}?",
           "I have {amount} {from_currency}; what's that in {to_currency}?"]),
    _tool("send_payment", "finance", "Send money to a contact.",
          [_str("recipient", "", "person"), _num("amount", "USD", "price"),
           _str("note", "", "note", opt=True)],
          ["Send {recipient} {amount}.",
           "Pay {recipient} {amount} with the note '{note}'.",
           "Transfer {amount} to {recipient} for '{note}'."], fan="recipient"),
    _tool("get_account_balance", "finance", "Balance of one of my accounts.",
          [_enum("account", "", {"checking": ("checking account",), "savings": ("savings account",),
                                        "credit_card": ("credit card",)})],
          ["What's the balance on my {account}?",
           "How much money is in my {account}?",
           "Show me my {account} balance."]),
    _tool("calculate_loan_payment", "finance", "Monthly payment of a loan.",
          [_num("principal", "USD", "loan"), _num("annual_rate", "percent", "rate"),
           _int("years", "", "count", lo=2, hi=30, noun="years")],
          ["What's the monthly payment on a {principal} loan at {annual_rate} over {years}?",
           "Calculate repayments for borrowing {principal} for {years} at {annual_rate} interest."]),
    _tool("get_crypto_price", "finance", "Price of a cryptocurrency.",
          [_str("symbol", "", "crypto"),
           _str("currency", "", "currency", default="USD")],
          ["What's {symbol} worth right now?",
           "Current {symbol} price in {currency}?",
           "Quote me {symbol} against {currency}."], split="heldout", fan="symbol"),
    _tool("split_bill", "finance", "Share of a bill per person.",
          [_num("total", "USD", "price"), _int("people", "", "people"),
           _int("tip_percent", "percent", "tip", default=0)],
          ["Split a {total} dinner bill between {people}.",
           "We owe {total} in total; divide it between {people} with {tip_percent}.",
           "Work out each share of a {total} check for {people}."], split="heldout"),
    # calendar
    _tool("create_event", "calendar", "Add an event to the calendar.",
          [_str("title", "", "event_title"), _str("date", _DATE, "date"),
           _str("time", _TIME, "time"),
           _int("duration_minutes", "", "minutes", default=60),
           _list("attendees", "", "person", opt=True)],
          ["Schedule '{title}' {date} {time}.",
           "Put '{title}' in my calendar {date} {time} for {duration_minutes}.",
           "Create a calendar event '{title}' {date} {time} with {attendees}.",
           "Add '{title}' {date} {time}, lasting {duration_minutes}, and invite {attendees}."]),
    _tool("list_events", "calendar", "Events on a given day.",
          [_str("date", _DATE, "date")],
          ["What's on my calendar {date}?", "Show my schedule {date}.", "Do I have any meetings {date}?"]),
    _tool("set_reminder", "calendar", "Create a reminder.",
          [_str("text", "", "reminder"), _str("date", _DATE, "date"),
           _str("time", _TIME, "time", opt=True)],
          ["Remind me to {text} {date} {time}.",
           "Set a reminder {date} to {text}.",
           "Don't let me forget to {text} {date} {time}."]),
    _tool("cancel_event", "calendar", "Delete a calendar event.",
          [_str("title", "", "event_title"), _str("date", _DATE, "date")],
          ["Cancel '{title}' {date}.",
           "Remove the '{title}' event {date} from my calendar.",
           "Please call off '{title}' {date}."]),
    _tool("find_free_slot", "calendar", "Find a time when everyone is free.",
          [_str("date", _DATE, "date"), _int("duration_minutes", "", "minutes"),
           _list("participants", "", "person")],
          ["Find time {date} for a meeting of {duration_minutes} with {participants}.",
           "When are {participants} all available {date} for {duration_minutes}?",
           "Look for a common free window of {duration_minutes} {date} for {participants}."],
          split="heldout"),
    # e-commerce
    _tool("search_products", "ecommerce", "Search the online shop.",
          [_str("query", "", "product"),
           _num("max_price", "USD", "price", opt=True),
           _enum("sort", "", {"relevance": ("most relevant first",),
                                        "price_low": ("cheapest first", "lowest price first"),
                                        "price_high": ("most expensive first",),
                                        "rating": ("best rated first", "top rated first")},
                 default="relevance")],
          ["Search the shop for {query} under {max_price}.",
           "Look up {query}, sorted {sort}.",
           "Show {query} options, {sort}, under {max_price}.",
           "What {query} options do you have?"], fan="query"),
    _tool("add_to_cart", "ecommerce", "Add an item to the cart.",
          [_str("product", "", "item"), _int("quantity", "total single items", "units")],
          ["Add {quantity} {product} to my cart.",
           "Put {quantity} {product} in the basket.",
           "I'd like {quantity} {product} added to my cart."]),
    _tool("track_order", "ecommerce", "Delivery status of an order.",
          [_str("order_id", "", "order_id")],
          ["Where is my order {order_id}?", "Track package {order_id}.",
           "What's the delivery status of {order_id}?"], fan="order_id"),
    _tool("apply_coupon", "ecommerce", "Apply a discount code to an order.",
          [_str("code", "", "coupon"), _str("order_id", "", "order_id")],
          ["Apply coupon {code} to order {order_id}.", "Use the discount code {code} on {order_id}."]),
    _tool("create_shipping_label", "ecommerce", "Create a parcel shipping label.",
          [_str("recipient", "", "person"),
           _p("address", "object", "", pool="address",
              extra={"properties": {"street": {"type": "string"}, "city": {"type": "string"},
                                    "postal_code": {"type": "string"}},
                     "required": ["street", "city", "postal_code"]}),
           _bool("express", "", {True: ("express",), False: ("standard",)}, default=False)],
          ["Make a shipping label for {recipient} at {address}.",
           "Ship a parcel to {recipient}, {address}, {express} delivery.",
           "Create a label for {recipient} at {address} with {express} shipping."]),
    _tool("return_item", "ecommerce", "Start a return.",
          [_str("order_id", "", "order_id"),
           _enum("reason", "", {"damaged": ("it arrived damaged", "it's broken"),
                                             "wrong_item": ("it's the wrong item", "they sent the wrong thing"),
                                             "not_needed": ("I don't need it anymore", "I changed my mind")})],
          ["I want to send back order {order_id} because {reason}.",
           "Start a return for {order_id}: {reason}.",
           "Please refund {order_id}, {reason}."], split="heldout"),
    _tool("order_groceries", "ecommerce", "Order groceries for delivery.",
          [_p("items", "array", "", pool="grocery_list",
              extra={"items": {"type": "object",
                               "properties": {"name": {"type": "string"}, "quantity": {"type": "integer"}},
                               "required": ["name", "quantity"]}}),
           _str("delivery_date", _DATE, "date", opt=True)],
          ["Order {items} for delivery {delivery_date}.",
           "Get me {items} from the grocery store.",
           "Grocery run: {items}, delivered {delivery_date}."], split="heldout"),
    # health and fitness
    _tool("log_workout", "health", "Log a workout.",
          [_enum("activity", "", {"running": ("running",), "cycling": ("cycling",),
                                          "swimming": ("swimming",), "yoga": ("yoga",),
                                          "walking": ("walking",)}),
           _int("duration_minutes", "", "minutes"), _str("date", _DATE, "date", opt=True)],
          ["Log {duration_minutes} of {activity} {date}.",
           "Record a {activity} workout that lasted {duration_minutes}.",
           "I did {duration_minutes} of {activity} today, please log it."]),
    _tool("log_water_intake", "health", "Log water drunk.",
          [_int("amount_ml", "", "ml")],
          ["Log {amount_ml} of water.", "I just drank {amount_ml} of water.",
           "Add {amount_ml} to today's water intake."]),
    _tool("get_calories", "health", "Calories in a food portion.",
          [_str("food", "", "food"), _int("grams", "", "grams")],
          ["How many calories are in {grams} of {food}?",
           "Calorie count for {grams} of {food}.",
           "I ate {grams} of {food}; how many calories is that?"], fan="food"),
    _tool("book_doctor_appointment", "health", "Book a doctor's appointment.",
          [_enum("specialty", "", {"general": ("my GP", "a general practitioner"),
                                                 "dentist": ("a dentist",),
                                                 "dermatology": ("a dermatologist", "a skin doctor"),
                                                 "cardiology": ("a cardiologist", "a heart specialist"),
                                                 "pediatrics": ("a pediatrician", "a children's doctor")}),
           _str("date", _DATE, "date"), _str("time", _TIME, "time", opt=True)],
          ["Book me an appointment with {specialty} {date}.",
           "I need to see {specialty} {date} {time}.",
           "Make an appointment {date} {time} with {specialty}."]),
    _tool("set_step_goal", "health", "Set the daily step goal.",
          [_int("steps", "", "steps")],
          ["Set my daily step goal to {steps}.", "I want to walk {steps} a day; update my goal."]),
    _tool("record_run", "health", "Save a run.",
          [_int("distance_m", "", "meters"),
           _int("duration_minutes", "", "minutes", opt=True)],
          ["Save a run of {distance_m} that took {duration_minutes}.",
           "I ran {distance_m} in {duration_minutes}; add it to my log.",
           "Track today's jog: {distance_m}."], split="heldout"),
    _tool("find_gym_class", "health", "Find fitness classes on a date.",
          [_enum("class_type", "", {"spin": ("spin",), "pilates": ("Pilates",), "hiit": ("HIIT",),
                                         "zumba": ("Zumba",), "boxing": ("boxing",)}),
           _str("date", _DATE, "date")],
          ["Any {class_type} classes {date}?",
           "Find a {class_type} session I can join {date}.",
           "Which gyms offer {class_type} {date}?"], split="heldout"),
    # messaging
    _tool("send_message", "messaging", "Send a chat message.",
          [_str("recipient", "", "person"), _str("text", "", "message")],
          ['Text {recipient}: "{text}"',
           'Send {recipient} a message saying "{text}".',
           'Message {recipient} with "{text}".'], fan="recipient"),
    _tool("send_email", "messaging", "Send an email.",
          [_list("to", "", "person"), _str("subject", "", "subject"),
           _str("body", "", "message", opt=True)],
          ["Email {to} with the subject '{subject}'.",
           "Send an email to {to} titled '{subject}' that says '{body}'.",
           "Write to {to} by email, subject '{subject}'."]),
    _tool("create_group_chat", "messaging", "Create a group chat.",
          [_str("name", "", "group"), _list("members", "", "person")],
          ["Start a group chat called '{name}' with {members}.",
           "Make a new group '{name}' and add {members}."]),
    _tool("get_unread_messages", "messaging", "Read unread messages.",
          [_str("contact", "only from this contact", "person", opt=True),
           _int("limit", "", "count", lo=2, hi=20, default=10)],
          ["Any new messages from {contact}?",
           "Read me my {limit} latest unread messages.",
           "Do I have unread messages?"], fan="contact"),
    _tool("schedule_message", "messaging", "Send a message later.",
          [_str("recipient", "", "person"), _str("text", "", "message"),
           _str("date", _DATE, "date"), _str("time", _TIME, "time")],
          ['Queue a message to {recipient} {date} {time}: "{text}"',
           'Have "{text}" sent to {recipient} {date} {time}.',
           'Send {recipient} "{text}" later, {date} {time}.'], split="heldout", fan="recipient"),
    # smart home
    _tool("set_lights", "smart_home", "Switch or dim the lights in a room.",
          [_enum("room", "", _ROOMS), _bool("on", "", {True: ("on",), False: ("off",)}),
           _int("brightness", "0-100", "brightness", opt=True)],
          ["Turn {on} the {room} lights.",
           "Switch the lights {on} in the {room}.",
           ("Set the {room} lights to {brightness}.", {"on": True}),
           ("Dim the {room} lights to {brightness}.", {"on": True})]),
    _tool("set_thermostat", "smart_home", "Set the thermostat.",
          [_num("temperature", "Celsius", "temperature"),
           _enum("mode", "", {"heat": ("heating",), "cool": ("cooling",), "auto": ("auto",)}, opt=True)],
          ["Set the thermostat to {temperature}.",
           ("Put the heating on {temperature}.", {"mode": "heat"}),
           "Thermostat to {temperature}, {mode} mode."]),
    _tool("lock_door", "smart_home", "Lock or unlock a door.",
          [_enum("door", "", {"front": ("front",), "back": ("back",), "garage": ("garage",)}),
           _bool("locked", "", {True: ("locked",), False: ("unlocked",)})],
          [("Lock the {door} door.", {"locked": True}),
           ("Unlock the {door} door, please.", {"locked": False}),
           "Make sure the {door} door is {locked}."]),
    _tool("start_vacuum", "smart_home", "Start the robot vacuum.",
          [_enum_list("rooms", "", _ROOMS, opt=True),
           _enum("mode", "", {"quiet": ("quiet",), "standard": ("standard",), "turbo": ("turbo",)},
                 default="standard")],
          ["Vacuum the {rooms}.",
           "Start the robot vacuum in the {rooms} on {mode} mode.",
           "Run the vacuum on {mode} mode."]),
    _tool("set_timer", "smart_home", "Start a countdown timer.",
          [_int("seconds", "", "seconds"),
           _str("label", "", "timer_label", opt=True)],
          ["Set a timer for {seconds}.", "Start a {label} timer for {seconds}.",
           "Timer for {seconds}, label it {label}."]),
    _tool("run_appliance", "smart_home", "Start a home appliance.",
          [_enum("appliance", "", {"washer": ("washing machine", "washer"), "dryer": ("dryer",),
                                            "dishwasher": ("dishwasher",), "oven": ("oven",)}),
           _int("delay_minutes", "", "minutes", default=0)],
          ["Start the {appliance} in {delay_minutes}.",
           "Run the {appliance} now.",
           "Delay the {appliance} by {delay_minutes}, then start it."], split="heldout"),
    # maps
    _tool("get_directions", "maps", "Route between two places.",
          [_str("origin", "", "city"), _str("destination", "", "city"),
           _enum("mode", "", {"driving": ("by car", "driving"), "walking": ("on foot", "walking"),
                                         "transit": ("by public transport", "by transit"),
                                         "cycling": ("by bike", "cycling")}, default="driving")],
          ["How do I get from {origin} to {destination} {mode}?",
           "Directions to {destination} from {origin}, please.",
           "Route from {origin} to {destination} {mode}."], fan="destination"),
    _tool("find_nearby", "maps", "Places of a kind near a location.",
          [_enum("place_type", "", {"restaurant": ("restaurants",),
                                                 "cafe": ("cafes", "coffee shops"),
                                                 "pharmacy": ("pharmacies",),
                                                 "gas_station": ("gas stations", "petrol stations"),
                                                 "atm": ("ATMs", "cash machines")}),
           _str("location", "", "city"), _int("radius_m", "", "meters", default=1000)],
          ["Find {place_type} in {location}.",
           "Any {place_type} within {radius_m} of the center of {location}?",
           "Show me {place_type} in {location}, at most {radius_m} away."], fan="location"),
    _tool("get_distance", "maps", "Distance between two places.",
          [_str("origin", "", "city"), _str("destination", "", "city"),
           _enum("unit", "", {"km": ("in kilometers", "in km"), "miles": ("in miles",)}, default="km")],
          ["How far is it from {origin} to {destination}?",
           "Distance from {origin} to {destination} {unit}.",
           "What's the distance from {origin} to {destination} {unit}?"], fan="destination"),
    _tool("geocode_address", "maps", "Coordinates of an address.",
          [_str("address", "", "street_address")],
          ["Get the coordinates of {address}.", "What are the latitude and longitude of {address}?"]),
    _tool("find_parking", "maps", "Find parking near a place.",
          [_str("location", "", "city"), _int("duration_minutes", "", "minutes"),
           _num("max_price", "USD", "price", opt=True)],
          ["I need parking in {location} for {duration_minutes}.",
           "Find a parking spot near {location} for {duration_minutes}, no more than {max_price}.",
           "Where can I park in {location} for {duration_minutes}?"], split="heldout", fan="location"),
    # entertainment
    _tool("play_song", "entertainment", "Play a song.",
          [_str("title", "", "song"), _str("artist", "", "artist", opt=True)],
          ["Play {title}.", "Put on {title} by {artist}.", "I want to hear {title} by {artist}."]),
    _tool("search_movies", "entertainment", "Find movies by genre.",
          [_enum("genre", "", {"comedy": ("comedy",), "drama": ("drama",), "horror": ("horror",),
                                    "sci_fi": ("sci-fi", "science fiction"), "animation": ("animated",),
                                    "documentary": ("documentary",)}),
           _int("year", "", "year", opt=True)],
          ["Recommend some {genre} movies.", "Find {genre} films from {year}.",
           "What good {genre} movies came out in {year}?"]),
    _tool("buy_movie_tickets", "entertainment", "Buy cinema tickets.",
          [_str("movie", "", "movie"), _str("city", "", "city"), _str("date", _DATE, "date"),
           _int("tickets", "", "people")],
          ["Buy tickets for {movie} in {city} {date} for {tickets}.",
           "Get me seats to see {movie} {date} in {city}, for {tickets}."]),
    _tool("get_showtimes", "entertainment", "Showtimes of a movie.",
          [_str("movie", "", "movie"), _str("city", "", "city"),
           _str("date", _DATE, "date", opt=True)],
          ["When is {movie} playing in {city}?", "Showtimes for {movie} in {city} {date}.",
           "What times can I see {movie} in {city} {date}?"], fan="movie"),
    _tool("book_concert_tickets", "entertainment", "Book concert tickets.",
          [_str("artist", "", "artist"), _str("city", "", "city"),
           _int("quantity", "", "people")],
          ["Grab concert tickets for {artist} in {city} for {quantity}.",
           "I'd love to see {artist} live in {city}; book it for {quantity}."], split="heldout"),
    _tool("create_playlist", "entertainment", "Create a playlist.",
          [_str("name", "", "playlist"), _list("songs", "", "song")],
          ["Make a playlist named '{name}' with {songs}.", "New playlist '{name}': {songs}.",
           "Put {songs} into a fresh playlist called '{name}'."], split="heldout"),
    # food
    _tool("book_table", "food", "Reserve a restaurant table.",
          [_str("restaurant", "", "restaurant"), _str("date", _DATE, "date"),
           _str("time", _TIME, "time"), _int("party_size", "", "people")],
          ["Book a table at {restaurant} {date} {time} for {party_size}.",
           "Reserve {restaurant} for {party_size} {date} {time}.",
           "Can you get us a table for {party_size} at {restaurant} {date} {time}?"]),
    _tool("order_food", "food", "Order food from a restaurant.",
          [_str("restaurant", "", "restaurant"), _list("dishes", "", "dish"),
           _bool("delivery", "false = pickup", {True: ("delivery",), False: ("pickup",)}, default=True)],
          ["Order {dishes} from {restaurant}.", "Get {dishes} from {restaurant} for {delivery}.",
           "I'd like {dishes} from {restaurant}, {delivery} please."]),
    _tool("find_recipe", "food", "Find recipes by ingredients.",
          [_list("ingredients", "", "ingredient"),
           _int("max_minutes", "", "minutes", opt=True)],
          ["Find a recipe with {ingredients}.", "What can I cook with {ingredients} in under {max_minutes}?",
           "Suggest a dish using {ingredients} that takes at most {max_minutes}."]),
    _tool("get_restaurant_reviews", "food", "Reviews of a restaurant.",
          [_str("restaurant", "", "restaurant")],
          ["What do people say about {restaurant}?", "Show reviews for {restaurant}.",
           "Is {restaurant} any good?"], fan="restaurant"),
    _tool("find_wine_pairing", "food", "Suggest a wine for a dish.",
          [_str("dish", "", "dish"), _num("budget", "USD", "price", opt=True)],
          ["Which wine goes with {dish}?", "Suggest a wine under {budget} to pair with {dish}.",
           "What should I drink with {dish}?"], split="heldout", fan="dish"),
)  # fmt: skip

DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(t.domain for t in TOOLS))
# Domains whose tools could plausibly serve each other's requests: never paired in irrelevance samples.
_OVERLAPS = (
    ("ecommerce", "food"),
    ("calendar", "messaging"),
    ("calendar", "health"),
    ("travel", "maps"),
    ("health", "food"),
)
OVERLAPPING_DOMAINS = frozenset(frozenset(p) for p in _OVERLAPS)

# --- split-specific frames --------------------------------------------------------------------------------
# Joins requests in parallel / parallel_multiple samples ("<request 1> Also, <request 2>").
CONNECTORS = {
    "train": ("Also, ", "Then ", "And ", "After that, "),
    "dev": ("On top of that, ", "As well, ", "Afterwards, ", "Moreover, "),
    "heldout": ("Additionally, ", "Next, ", "Besides that, ", "Plus, "),
}
# Irrelevance requests no tool in the catalogue serves.
CHITCHAT = {
    "train": (
        "Tell me a joke about penguins.", "What's the capital of Australia?", "Write a short poem about the sea.",
        "How do I boil an egg?", "Who wrote Pride and Prejudice?", "Explain what a black hole is.",
        "Translate 'good morning' into Spanish.", "Give me three tips for better sleep.",
        "Summarize the plot of Hamlet in one sentence.", "What is the tallest mountain in Africa?",
    ),
    "dev": (
        "What's a good synonym for 'happy'?", "How far away is the moon?", "Tell me a fun fact about octopuses.",
        "Who painted the Mona Lisa?", "What rhymes with 'orange'?", "How do rainbows form?",
    ),
    "heldout": (
        "Why is the sky blue?", "Suggest a name for my new puppy.",
        "What's the difference between a virus and a bacterium?", "Compose a limerick about coffee.",
        "How many legs does a spider have?", "What year did the Berlin Wall fall?",
        "Define the word 'ephemeral'.", "Recommend a board game for four players.",
    ),
}  # fmt: skip


def tools_in(split: str) -> tuple[Tool, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return tuple(t for t in TOOLS if t.split == split)


def templates_in(split: str) -> list[str]:
    """Every request phrasing of a split: tool templates, connectors and chit-chat."""
    out = [tp.text for t in tools_in(split) for tp in t.templates]
    return out + list(CONNECTORS[split]) + list(CHITCHAT[split])


FAN_POOLS = frozenset(ENTITY_POOLS) | {"order_id", "ident"}  # pools a parallel request can list


def check_tools(tools: tuple[Tool, ...]) -> None:
    """Fail at import on a catalogue mistake, naming the tool and the template."""
    names = [t.name for t in tools]
    if len(names) != len(set(names)):
        raise ValueError("duplicate tool names in the synthetic catalogue")
    known_pools = set(LIST_POOLS) | set(GENERATED_POOLS)
    for t in tools:
        if t.split not in SPLITS:
            raise ValueError(f"{t.name}: unknown split {t.split!r}")
        params = {p.name: p for p in t.params}
        for p in t.params:
            if p.pool is not None and p.pool not in known_pools:
                raise ValueError(f"{t.name}.{p.name}: unknown pool {p.pool!r}")
            if p.pool is None and p.say is None:
                raise ValueError(f"{t.name}.{p.name}: needs a pool or phrasings")
            if p.say is not None and p.type != "boolean" and set(p.say) != set(p.enum or ()):
                raise ValueError(f"{t.name}.{p.name}: phrasings must cover the enum exactly")
        if t.fan is not None and params[t.fan].pool not in FAN_POOLS:
            raise ValueError(f"{t.name}: fan parameter {t.fan!r} must draw from an entity pool")
        for tp in t.templates:
            mentioned = set(tp.slots) | set(tp.fixed)
            unknown = mentioned - set(params)
            missing = {p.name for p in t.params if p.required} - mentioned
            if unknown or missing or len(tp.slots) != len(set(tp.slots)):
                raise ValueError(f"{t.name}: template {tp.text!r}: unknown {unknown}, missing {missing}")
        json.dumps(t.schema())


check_tools(TOOLS)
