"""Seeded generator of realistic product listings for the price predictor.

    python data/price_predictor/generate.py [--seed 7] [--n 3600] [--out data/price_predictor]
    python data/price_predictor/generate.py --describe      # print the coefficient table below

Writes train.jsonl / valid.jsonl / test.jsonl (80 / 5 / 15 %), one JSON object per line with exactly the
keys "title", "description", "category", "price". The same seed gives byte-identical files; item i depends
only on (seed, i), so a smaller --n gives a prefix of the same items before the split.

How an item is drawn
--------------------
Category (uniform over the 12 below), then within it, uniformly: a product type, a brand (two invented
brands per tier: budget / mid / premium), a size or quantity option of that type, a material allowed for
that type, 1-3 distinct features allowed for that type, and a colour (or scent / flavour / variant).

The price process (everything in it is written in the title or the description)
-------------------------------------------------------------------------------
    log(price) = log(base price of the product type)
               + tier effect        budget -0.40, mid 0.00, premium +0.45
               + size effect        k * log(size value / reference size)      (k and reference per type)
               + material effect    (per material, below)
               + sum of the feature effects                                   (per feature, below)
               + noise              Gaussian, sigma 0.25
    price = exp(log(price)), clipped to [0.50, 999.49], rounded to cents.

So a premium brand costs exp(0.85) = 2.3x a budget one of the same type, size, material and features,
and a size twice the reference costs 2**k times the reference price. The tier is stated in the first
sentence of the description ("budget" / "mid-range" / "premium"); the product type, brand and size are in
the title; the material and every feature are in the description (the first feature is also in the
title). Colour, warranty length, care and box-content sentences are neutral filler with no effect.

Worked examples (before noise, which multiplies by exp(N(0, 0.25)), i.e. roughly 0.78x-1.28x):
    premium Solenne Air Fryer, 8-quart, stainless steel, digital touchscreen:
        75 * exp(0.45 + 0.6*log(8/5) + 0.15 + 0.10) = $200
    budget Deskly Gel Pens, Pack of 48, plastic, quick-dry ink:
        10 * exp(-0.40 + 0.6*log(48/24) - 0.15 + 0.05) = $9.19

Coefficients (the output of --describe; CATALOG below is the source):

Appliances. Brands: budget Homvo, Brisko; mid Kelvane, Norrick; premium Vossberg, Calderra
    Microwave Oven: base $120; size effect 0.8 * log(v / 1.1); "{v} cu. ft." with v in 0.7, 0.9, 1.1, 1.6,
        2.2
    Compact Refrigerator: base $220; size effect 0.8 * log(v / 3.1); "{v} cu. ft." with v in 1.7, 2.7,
        3.1, 4.4
    Window Air Conditioner: base $280; size effect 0.7 * log(v / 8000); "{v:,} BTU" with v in 5000, 6000,
        8000, 10000, 12000
    Dehumidifier: base $180; size effect 0.6 * log(v / 35); "{v}-pint" with v in 20, 35, 50
    Portable Ice Maker: base $130; size effect 0.6 * log(v / 33); "{v} lbs per day" with v in 26, 33, 45
    Robot Vacuum: base $220; size effect 0.6 * log(v / 120); "{v}-minute runtime" with v in 90, 120, 180
    Materials: stainless steel +0.15, black stainless steel +0.20, painted steel +0.00, plastic -0.15,
        tempered glass +0.10
    Features: Energy Star +0.08, Wi-Fi +0.18, Inverter Technology +0.20, Quiet Operation +0.08,
        Remote Control +0.06, Sensor Cooking +0.08, Child Lock +0.03, Reversible Door +0.03,
        Freezer Compartment +0.12, Self-Cleaning +0.06, Fast Ice +0.06, Continuous Drain +0.05,
        Self-Emptying Base +0.35, LiDAR Navigation +0.25, Mopping Pad +0.12
Automotive. Brands: budget Rodix, Autoly; mid Drivara, Motorvale; premium Veltrano, Graustark
    Portable Jump Starter: base $70; size effect 0.6 * log(v / 1500); "{v}A peak" with v in 1000, 1500,
        2000, 3000
    All-Weather Floor Mats: base $35; size effect 0.5 * log(v / 4); "{v}-piece set" with v in 2, 3, 4
    Dash Cam: base $60; size effect 0.9 * log(v / 1440); 1080p v=1080, 1440p v=1440, 4K v=2160
    Tire Inflator: base $40; size effect 0.6 * log(v / 120); "{v} PSI" with v in 100, 120, 150
    Car Wax: base $14; size effect 0.5 * log(v / 16); "{v} oz" with v in 8, 16, 32
    Windshield Wiper Blades: base $18; size effect 0.3 * log(v / 22); "{v}-inch" with v in 16, 20, 24, 26
    Car Seat Covers: base $40; size effect 0.45 * log(v / 5); "{v}-piece" with v in 2, 5, 9
    Materials: rubber +0.00, TPE +0.10, silicone +0.15, ABS plastic -0.10, aluminum +0.12, carnauba +0.15,
        synthetic polymer +0.00, neoprene +0.15, polyester -0.10, faux leather +0.20
    Features: LCD Display +0.06, USB Charging +0.05, Air Compressor +0.25, LED Flashlight +0.03,
        Custom Fit +0.20, Raised Edges +0.05, Odorless +0.03, Night Vision +0.10, GPS +0.12,
        Front and Rear Cameras +0.30, Wi-Fi +0.10, Auto Shut-Off +0.05, Cordless +0.15,
        UV Protection +0.05, Water Beading +0.06, Microfiber Towel +0.04, All-Season +0.05,
        Easy Install +0.03, Beam Design +0.08, Waterproof +0.08, Airbag Compatible +0.06,
        Machine Washable +0.03
Beauty & Personal Care. Brands: budget Glowly, Purelo; mid Lunessa, Velour Bay; premium Maison Orlay, Elodrine
    Face Moisturizer: base $24; size effect 0.6 * log(v / 1.7); "{v} fl oz" with v in 1, 1.7, 2.5, 3.4
    Shampoo: base $11; size effect 0.5 * log(v / 12); "{v} fl oz" with v in 8, 12, 16, 33.8
    Hair Dryer: base $50; size effect 0.8 * log(v / 1875); "{v}W" with v in 1200, 1600, 1875, 2000
    Electric Toothbrush: base $45; size effect 0.7 * log(v / 1); "Pack of {v}" with v in 1, 2
    Eau de Parfum: base $65; size effect 0.6 * log(v / 50); "{v} ml" with v in 30, 50, 100
    Nail Polish Set: base $16; size effect 0.5 * log(v / 6); "Set of {v}" with v in 3, 6, 12
    Materials: shea butter +0.00, hyaluronic acid +0.12, argan oil +0.08, aloe vera -0.08, ceramic +0.05,
        tourmaline ceramic +0.15, plastic -0.12, recycled plastic -0.05, aluminum +0.12, glass +0.10,
        crystal glass +0.25
    Features: Dermatologist Tested +0.08, SPF 30 +0.12, Sulfate-Free +0.06, Vegan +0.05,
        Ionic Technology +0.12, Diffuser Attachment +0.05, Foldable Handle +0.03, Pressure Sensor +0.10,
        Rechargeable +0.10, Smart Timer +0.05, Travel Case +0.08, Long-Lasting +0.10, Gift Box +0.08,
        Quick-Dry +0.05
Electronics. Brands: budget Zupto, Voltini; mid Lumetra, Sonavik; premium Aethrix, Veyluna
    Smart TV: base $280; size effect 1.5 * log(v / 50); "{v}-inch" with v in 32, 43, 50, 55, 65, 75
    Bluetooth Speaker: base $45; size effect 0.5 * log(v / 20); "{v}W" with v in 5, 10, 20, 40, 60
    Wireless Earbuds: base $55; size effect 0.5 * log(v / 30); "{v}-hour battery" with v in 20, 30, 40, 50
    Computer Monitor: base $170; size effect 1.3 * log(v / 27); "{v}-inch" with v in 22, 24, 27, 32, 34
    Portable Power Bank: base $28; size effect 0.45 * log(v / 10000); "{v:,} mAh" with v in 5000, 10000,
        20000, 26800
    USB-C Charging Cable: base $9; size effect 0.55 * log(v / 1); "Pack of {v}" with v in 1, 2, 3, 5
    Materials: ABS plastic -0.10, recycled plastic -0.05, aluminum +0.12, magnesium alloy +0.18,
        braided nylon +0.08
    Features: 4K HDR +0.25, 120Hz +0.15, Wi-Fi +0.12, Voice Assistant +0.10, Noise Cancelling +0.30,
        Waterproof +0.12, Bluetooth 5.3 +0.06, Fast Charging +0.08, USB-C +0.03,
        Height Adjustable Stand +0.10, Charge Display +0.05, 100W +0.15, Wireless Charging +0.15,
        10Gbps Data +0.10
Home & Furniture. Brands: budget Homzy, Roomly; mid Linden Row, Oakhearth; premium Maison Verlaine, Thorsby
    Bookshelf: base $90; size effect 0.5 * log(v / 5); "{v}-shelf" with v in 3, 4, 5, 6
    Area Rug: base $80; size effect 0.6 * log(v / 35); 2 x 3 ft v=6, 4 x 6 ft v=24, 5 x 7 ft v=35,
        8 x 10 ft v=80, 9 x 12 ft v=108
    Sheet Set: base $40; size effect 1 * log(v / 1.3); Twin v=1, Full v=1.15, Queen v=1.3, King v=1.5,
        California King v=1.55
    Throw Pillow Covers: base $18; size effect 0.6 * log(v / 2); "Set of {v}" with v in 2, 4, 6
    Table Lamp: base $35; size effect 0.6 * log(v / 19); "{v}-inch" with v in 14, 19, 24, 28
    Sofa: base $550; size effect 1.2 * log(v / 84); "{v}-inch" with v in 60, 72, 84, 96
    Blackout Curtains: base $28; size effect 0.5 * log(v / 84); "{v} inch long" with v in 63, 84, 96, 108
    Materials: solid wood +0.25, engineered wood -0.15, metal +0.00, wool +0.30, jute +0.10,
        polypropylene -0.15, cotton +0.05, linen +0.25, microfiber -0.20, velvet +0.15, polyester -0.15,
        ceramic +0.10, glass +0.05, top-grain leather +0.40
    Features: Adjustable Shelves +0.06, Anti-Tip Kit +0.02, Tool-Free Assembly +0.05, Non-Shedding +0.05,
        Hand-Woven +0.25, Stain Resistant +0.06, Deep Pockets +0.05, Cooling +0.10,
        Wrinkle Resistant +0.04, Hidden Zipper +0.03, Inserts Included +0.30, Reversible +0.04,
        USB Port +0.08, Dimmable +0.10, LED Bulb Included +0.04, Pull-Out Sleeper +0.30,
        Removable Cushions +0.06, Thermal Insulated +0.08, Grommet Top +0.02
Kitchen. Brands: budget Panlo, Cookiva; mid Harth & Hale, Mirabrook; premium Solenne, Brennholt
    Air Fryer: base $75; size effect 0.6 * log(v / 5); "{v}-quart" with v in 2, 4, 5, 6, 8
    Chef's Knife: base $40; size effect 0.4 * log(v / 8); "{v}-inch" with v in 6, 8, 10
    Cookware Set: base $120; size effect 0.6 * log(v / 10); "{v}-piece" with v in 5, 8, 10, 12, 15
    Blender: base $65; size effect 0.5 * log(v / 48); "{v} oz" with v in 24, 48, 64, 72
    Drip Coffee Maker: base $55; size effect 0.4 * log(v / 12); "{v}-cup" with v in 4, 8, 12, 14
    Food Storage Containers: base $22; size effect 0.5 * log(v / 20); "{v}-piece set" with v in 10, 20,
        30, 42
    Dutch Oven: base $60; size effect 0.6 * log(v / 5.5); "{v:g}-quart" with v in 3, 5.5, 7
    Materials: stainless steel +0.15, high-carbon steel +0.20, ceramic +0.05, nonstick aluminum +0.00,
        cast iron +0.10, enameled cast iron +0.30, BPA-free plastic -0.25, borosilicate glass +0.15
    Features: Dishwasher Safe +0.06, Digital Touchscreen +0.10, Programmable +0.12,
        Induction Compatible +0.10, Oven Safe +0.06, Full Tang +0.10, Ergonomic Handle +0.04,
        Blade Guard +0.03, Gift Box +0.05, Auto Shut-Off +0.04, Thermal Carafe +0.12, Self-Cleaning +0.06,
        Airtight Lids +0.06, Freezer Safe +0.03, Self-Basting Lid +0.06
Musical Instruments. Brands: budget Tunzy, Strumbo; mid Cadenza Road, Harmona; premium Aurelstein, Valdivar
    Acoustic Guitar: base $180; size effect 1.2 * log(v / 1); 3/4 size v=0.75, full size v=1,
        jumbo body v=1.15
    Digital Piano: base $230; size effect 1.5 * log(v / 88); "{v}-key" with v in 61, 76, 88
    Guitar Strings: base $8; size effect 0.7 * log(v / 1); "Pack of {v} sets" with v in 1, 3, 5
    Ukulele: base $55; size effect 1.5 * log(v / 23); soprano v=21, concert v=23, tenor v=26,
        baritone v=30
    Guitar Amplifier: base $120; size effect 0.5 * log(v / 20); "{v}W" with v in 10, 20, 40, 100
    Drumsticks: base $12; size effect 0.7 * log(v / 1); 1 pair v=1, 4 pairs v=4, 12 pairs v=12
    Materials: solid spruce +0.30, mahogany +0.15, laminated wood -0.25, koa +0.35, plastic -0.10,
        wood cabinet +0.20, plywood +0.10, MDF -0.10, nickel-plated steel +0.00, phosphor bronze +0.10,
        coated bronze +0.35, hickory +0.00, maple -0.05, carbon fiber +0.60
    Features: Built-in Tuner +0.08, Gig Bag +0.10, Cutaway +0.06, Pickup +0.18, Weighted Keys +0.25,
        USB-MIDI +0.06, Bluetooth +0.10, Sustain Pedal +0.04, Headphone Output +0.02,
        Built-in Effects +0.12, Looper +0.08, Light Gauge +0.02, Corrosion Resistant +0.08,
        Bright Tone +0.02, Nylon Tips +0.04, Anti-Slip Grip +0.05, Stick Bag +0.08
Office Products. Brands: budget Deskly, Papero; mid Officore, Scribewell; premium Ardenfeld, Corvello
    Office Chair: base $150; size effect 0.6 * log(v / 300); "{v} lb capacity" with v in 250, 300, 400
    Printer Paper: base $9; size effect 0.85 * log(v / 1); 1 ream v=1, 3 reams v=3, 5 reams v=5,
        10 reams v=10
    Gel Pens: base $10; size effect 0.6 * log(v / 24); "Pack of {v}" with v in 12, 24, 48, 96
    Standing Desk: base $260; size effect 0.7 * log(v / 48); "{v} x 24 inch" with v in 40, 48, 55, 63
    Label Maker: base $35; size effect 0.5 * log(v / 12); "{v} mm tape" with v in 12, 18, 24
    Paper Shredder: base $70; size effect 0.7 * log(v / 8); "{v}-sheet" with v in 6, 8, 12, 18
    Desk Organizer: base $22; size effect 0.35 * log(v / 6); "{v}-compartment" with v in 4, 6, 9
    Materials: mesh fabric +0.00, bonded leather +0.10, genuine leather +0.30, bamboo +0.15, steel +0.05,
        engineered wood -0.10, plastic -0.15, aluminum +0.20, recycled paper +0.10, virgin wood pulp +0.00
    Features: Lumbar Support +0.12, Headrest +0.10, 4D Armrests +0.12, Acid-Free +0.05, 96 Bright +0.05,
        Jam-Free +0.03, Quick-Dry Ink +0.05, Refillable +0.08, Fine Tip +0.02, Dual Motor +0.22,
        Memory Presets +0.08, Cable Tray +0.05, Bluetooth +0.18, Rechargeable +0.12,
        QWERTY Keyboard +0.05, Cross-Cut +0.10, Auto Feed +0.25, Pull-Out Drawer +0.06, Phone Stand +0.04,
        Rotating Base +0.05
Pet Supplies. Brands: budget Pawsy, Petlo; mid Furwell, Kindlepaw; premium Canelle & Co, Hundberg
    Dry Dog Food: base $38; size effect 0.7 * log(v / 24); "{v} lb bag" with v in 4, 15, 24, 30, 40
    Clumping Cat Litter: base $18; size effect 0.6 * log(v / 20); "{v} lb" with v in 10, 20, 28, 40
    Orthopedic Dog Bed: base $45; size effect 1 * log(v / 36); "{v}-inch" with v in 24, 30, 36, 42, 48
    Cat Tree: base $70; size effect 0.9 * log(v / 48); "{v} inches tall" with v in 34, 48, 60, 72
    Dog Chew Toys: base $12; size effect 0.5 * log(v / 6); "Pack of {v}" with v in 3, 6, 12
    Automatic Pet Feeder: base $60; size effect 0.4 * log(v / 4); "{v}L" with v in 2, 4, 6
    Materials: real chicken +0.00, wild-caught salmon +0.20, lamb +0.10, chicken meal -0.15, clay +0.00,
        silica crystals +0.25, walnut shell +0.15, memory foam +0.20, egg-crate foam +0.00,
        polyester fill -0.15, sisal and plush +0.00, solid wood +0.30, particle board -0.15,
        natural rubber +0.10, nylon +0.00, cotton rope -0.10, ABS plastic -0.05, stainless steel +0.15
    Features: Grain-Free +0.12, No Artificial Flavors +0.05, Probiotics +0.08, Odor Control +0.06,
        Low Dust +0.08, Lightweight +0.06, Washable Cover +0.06, Waterproof Liner +0.08,
        Non-Skid Bottom +0.03, Condo +0.08, Hammock +0.05, Scratching Posts +0.04, Squeaker +0.02,
        Treat Dispensing +0.08, Dental Ridges +0.04, Wi-Fi +0.20, Voice Recorder +0.05,
        Battery Backup +0.06, HD Camera +0.25
Sports & Outdoors. Brands: budget Movix, Trailo; mid Summitra, Pacewell; premium Kestrion, Altrevo
    Yoga Mat: base $28; size effect 0.4 * log(v / 6); "{v} mm thick" with v in 4, 6, 8, 10
    Camping Tent: base $120; size effect 0.6 * log(v / 4); "{v}-person" with v in 1, 2, 4, 6, 8
    Adjustable Dumbbells: base $180; size effect 0.7 * log(v / 50); "{v} lb" with v in 25, 50, 75, 90
    Insulated Water Bottle: base $24; size effect 0.4 * log(v / 32); "{v} oz" with v in 18, 24, 32, 40, 64
    Hiking Backpack: base $65; size effect 0.5 * log(v / 35); "{v}L" with v in 20, 35, 50, 65
    Resistance Bands: base $18; size effect 0.4 * log(v / 5); "Set of {v}" with v in 3, 5, 11
    Materials: TPE -0.05, natural rubber +0.12, cork +0.15, latex -0.05, ripstop nylon +0.08,
        polyester -0.10, cast iron +0.00, steel +0.08, stainless steel +0.00, BPA-free plastic -0.30
    Features: Non-Slip +0.04, Alignment Lines +0.05, Carrying Strap +0.03, Exercise Guide +0.02,
        Waterproof +0.12, Ultralight +0.20, Instant Setup +0.10, Quick-Select Dial +0.15,
        Storage Tray +0.05, App Tracking +0.15, Leakproof Lid +0.04, Cold for 24 Hours +0.08,
        Dishwasher Safe +0.04, Hydration Sleeve +0.05, Rain Cover +0.06, Door Anchor +0.04,
        Handles and Ankle Straps +0.08
Tools & Home Improvement. Brands: budget Fixby, Torqo; mid Ironvale, Graddock; premium Haldstrom, Ruttgen
    Cordless Drill: base $80; size effect 0.6 * log(v / 20); "{v}V" with v in 12, 18, 20, 40
    Circular Saw: base $95; size effect 1.2 * log(v / 7.25); "{v:g}-inch blade" with v in 6.5, 7.25, 8.25
    Socket Set: base $45; size effect 0.5 * log(v / 80); "{v}-piece" with v in 40, 80, 120, 200
    Wet/Dry Shop Vacuum: base $85; size effect 0.5 * log(v / 6); "{v:g}-gallon" with v in 2.5, 5, 9, 12,
        16
    Air Compressor: base $150; size effect 0.7 * log(v / 2); "{v:g} HP" with v in 1, 1.5, 2, 3.5
    Tape Measure: base $14; size effect 0.35 * log(v / 25); "{v} ft" with v in 16, 25, 30, 35
    LED Shop Light: base $30; size effect 0.6 * log(v / 2); "Pack of {v}" with v in 1, 2, 4, 6
    Materials: steel +0.00, chrome vanadium steel +0.12, aluminum +0.10, glass-filled nylon +0.05,
        plastic -0.20, stainless steel +0.15, magnesium +0.18
    Features: Brushless Motor +0.25, Battery Included +0.30, LED Work Light +0.04, Variable Speed +0.08,
        Laser Guide +0.06, Carrying Case +0.08, Quick-Release +0.06, SAE and Metric +0.10,
        Blower Port +0.06, HEPA Filter +0.12, Oil-Free +0.08, Quiet Operation +0.12, Wheel Kit +0.08,
        Magnetic Hook +0.05, Auto Lock +0.06, Shock Resistant +0.04, Linkable +0.06, 5000K Daylight +0.03,
        Motion Sensor +0.10
Toys & Games. Brands: budget Playzo, Funbit; mid Brightnook, Wigglewood; premium Tinkerhaus, Marvelwright
    Building Blocks Set: base $30; size effect 0.5 * log(v / 250); "{v} pieces" with v in 100, 250, 500,
        1000
    Jigsaw Puzzle: base $16; size effect 0.3 * log(v / 1000); "{v}-piece" with v in 300, 500, 1000, 2000
    Remote Control Car: base $40; size effect 0.8 * log(v / 15); "{v} mph top speed" with v in 10, 15, 25,
        35
    Board Game: base $28; size effect 0.25 * log(v / 4); "2-{v} players" with v in 4, 6, 8
    Plush Toy: base $16; size effect 0.6 * log(v / 12); "{v}-inch" with v in 8, 12, 16, 24
    Kids Art Kit: base $25; size effect 0.45 * log(v / 100); "{v}-piece" with v in 50, 100, 150, 200
    Materials: ABS plastic +0.00, wood +0.15, recycled cardboard -0.15, recycled plastic +0.05,
        aluminum alloy +0.15, plush polyester +0.00, organic cotton +0.20
    Features: STEM Learning +0.08, Storage Box +0.05, Rechargeable Battery +0.15, App Controlled +0.20,
        All-Terrain +0.08, Glow in the Dark +0.04, Poster Included +0.02, Expansion Pack +0.15,
        Award-Winning +0.08, Quick Play +0.02, Machine Washable +0.05, Hypoallergenic +0.05,
        Sound Effects +0.10, Washable Markers +0.04"""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT_SEED, DEFAULT_N = 7, 3600
MIN_PRICE, MAX_PRICE = 0.5, 999.49  # the task's range (apps/price_predictor/curation.py), so no item is dropped
NOISE_SIGMA = 0.25
TIER_EFFECT = {"budget": -0.40, "mid": 0.0, "premium": 0.45}
SPLIT_SHARES = {"train": 0.80, "valid": 0.05, "test": 0.15}
MIN_WORDS, MAX_WORDS = 40, 110


def sizes(fmt: str, values, ref: float, k: float, lead: bool = True) -> dict:
    """A size scheme: options (label, value), effect k * log(value / ref). lead: the label reads well
    before the product type in a title ("55-inch Smart TV", not "Pack of 6 Gel Pens")."""
    return {"options": [(fmt.format(v=v), v) for v in values], "ref": ref, "k": k, "lead": lead,
            "show": f'"{fmt}" with v in ' + ", ".join(f"{v:g}" for v in values)}


def labelled(options, ref: float, k: float, lead: bool = False) -> dict:
    return {"options": list(options), "ref": ref, "k": k, "lead": lead,
            "show": ", ".join(f"{label} v={v:g}" for label, v in options)}


# Each category: types (name, base price, size scheme[, variants replacing the colours]),
# materials and features (title label, description phrase, log effect, product types or None for all),
# brands per tier, colours, use cases and neutral extra sentences.
CATALOG: dict[str, dict] = {
    "Appliances": {
        "types": [
            ("Microwave Oven", 120, sizes("{v} cu. ft.", [0.7, 0.9, 1.1, 1.6, 2.2], 1.1, 0.8)),
            ("Compact Refrigerator", 220, sizes("{v} cu. ft.", [1.7, 2.7, 3.1, 4.4], 3.1, 0.8)),
            ("Window Air Conditioner", 280, sizes("{v:,} BTU", [5000, 6000, 8000, 10000, 12000], 8000, 0.7)),
            ("Dehumidifier", 180, sizes("{v}-pint", [20, 35, 50], 35, 0.6)),
            ("Portable Ice Maker", 130, sizes("{v} lbs per day", [26, 33, 45], 33, 0.6, lead=False)),
            ("Robot Vacuum", 220, sizes("{v}-minute runtime", [90, 120, 180], 120, 0.6, lead=False)),
        ],
        "materials": [
            ("stainless steel", 0.15, ("Microwave Oven", "Compact Refrigerator", "Portable Ice Maker")),
            ("black stainless steel", 0.20, ("Microwave Oven", "Compact Refrigerator")),
            ("painted steel", 0.0, ("Microwave Oven", "Compact Refrigerator", "Window Air Conditioner",
                                    "Dehumidifier")),
            ("plastic", -0.15, ("Window Air Conditioner", "Dehumidifier", "Portable Ice Maker", "Robot Vacuum")),
            ("tempered glass", 0.10, ("Robot Vacuum",)),
        ],
        "features": [
            ("Energy Star", "Energy Star certification", 0.08,
             ("Compact Refrigerator", "Window Air Conditioner", "Dehumidifier")),
            ("Wi-Fi", "Wi-Fi app control", 0.18,
             ("Window Air Conditioner", "Dehumidifier", "Robot Vacuum", "Microwave Oven")),
            ("Inverter Technology", "inverter technology", 0.20, ("Microwave Oven", "Window Air Conditioner")),
            ("Quiet Operation", "quiet operation", 0.08,
             ("Window Air Conditioner", "Compact Refrigerator", "Portable Ice Maker", "Dehumidifier")),
            ("Remote Control", "a remote control", 0.06, ("Window Air Conditioner",)),
            ("Sensor Cooking", "sensor cooking presets", 0.08, ("Microwave Oven",)),
            ("Child Lock", "a child safety lock", 0.03, ("Microwave Oven",)),
            ("Reversible Door", "a reversible door", 0.03, ("Compact Refrigerator",)),
            ("Freezer Compartment", "a separate freezer compartment", 0.12, ("Compact Refrigerator",)),
            ("Self-Cleaning", "a self-cleaning function", 0.06, ("Portable Ice Maker",)),
            ("Fast Ice", "the first ice in about 6 minutes", 0.06, ("Portable Ice Maker",)),
            ("Continuous Drain", "a continuous drain hose outlet", 0.05, ("Dehumidifier",)),
            ("Self-Emptying Base", "a self-emptying base", 0.35, ("Robot Vacuum",)),
            ("LiDAR Navigation", "LiDAR navigation", 0.25, ("Robot Vacuum",)),
            ("Mopping Pad", "a mopping pad", 0.12, ("Robot Vacuum",)),
        ],
        "brands": {"budget": ["Homvo", "Brisko"], "mid": ["Kelvane", "Norrick"],
                   "premium": ["Vossberg", "Calderra"]},
        "colours": ["White", "Black", "Silver", "Graphite"],
        "uses": ["apartments and dorm rooms", "busy family kitchens", "home offices", "small spaces",
                 "garages and basements", "everyday household use"],
        "extras": ["Setup takes only a few minutes and the controls are clearly labelled.",
                   "Leave a few inches of clearance around the vents for best performance.",
                   "Plug it into a grounded outlet; no special wiring is needed."],
        "care": ["Wipe the exterior with a soft, damp cloth.", "Unplug before cleaning and dry all surfaces."],
    },
    "Electronics": {
        "types": [
            ("Smart TV", 280, sizes("{v}-inch", [32, 43, 50, 55, 65, 75], 50, 1.5)),
            ("Bluetooth Speaker", 45, sizes("{v}W", [5, 10, 20, 40, 60], 20, 0.5)),
            ("Wireless Earbuds", 55, sizes("{v}-hour battery", [20, 30, 40, 50], 30, 0.5, lead=False)),
            ("Computer Monitor", 170, sizes("{v}-inch", [22, 24, 27, 32, 34], 27, 1.3)),
            ("Portable Power Bank", 28, sizes("{v:,} mAh", [5000, 10000, 20000, 26800], 10000, 0.45)),
            ("USB-C Charging Cable", 9, sizes("Pack of {v}", [1, 2, 3, 5], 1, 0.55, lead=False)),
        ],
        "materials": [
            ("ABS plastic", -0.10, None),
            ("recycled plastic", -0.05, None),
            ("aluminum", 0.12, None),
            ("magnesium alloy", 0.18, ("Smart TV", "Computer Monitor", "Bluetooth Speaker")),
            ("braided nylon", 0.08, ("USB-C Charging Cable",)),
        ],
        "features": [
            ("4K HDR", "a 4K HDR panel", 0.25, ("Smart TV", "Computer Monitor")),
            ("120Hz", "a 120Hz refresh rate", 0.15, ("Smart TV", "Computer Monitor")),
            ("Wi-Fi", "built-in Wi-Fi", 0.12, ("Smart TV", "Bluetooth Speaker")),
            ("Voice Assistant", "voice assistant support", 0.10,
             ("Smart TV", "Bluetooth Speaker", "Wireless Earbuds")),
            ("Noise Cancelling", "active noise cancelling", 0.30, ("Wireless Earbuds",)),
            ("Waterproof", "IPX7 waterproofing", 0.12, ("Bluetooth Speaker", "Wireless Earbuds")),
            ("Bluetooth 5.3", "Bluetooth 5.3", 0.06, ("Bluetooth Speaker", "Wireless Earbuds")),
            ("Fast Charging", "fast charging support", 0.08,
             ("Portable Power Bank", "USB-C Charging Cable", "Wireless Earbuds")),
            ("USB-C", "a USB-C port", 0.03, ("Portable Power Bank", "Computer Monitor", "Bluetooth Speaker")),
            ("Height Adjustable Stand", "a height-adjustable stand", 0.10, ("Computer Monitor",)),
            ("Charge Display", "a digital charge display", 0.05, ("Portable Power Bank",)),
            ("100W", "100W power delivery", 0.15, ("Portable Power Bank", "USB-C Charging Cable")),
            ("Wireless Charging", "wireless charging", 0.15, ("Portable Power Bank", "Wireless Earbuds")),
            ("10Gbps Data", "10Gbps data transfer", 0.10, ("USB-C Charging Cable",)),
        ],
        "brands": {"budget": ["Zupto", "Voltini"], "mid": ["Lumetra", "Sonavik"],
                   "premium": ["Aethrix", "Veyluna"]},
        "colours": ["Black", "White", "Silver", "Space Gray", "Midnight Blue"],
        "uses": ["streaming and gaming", "work and study", "travel and commuting", "home entertainment",
                 "everyday listening and viewing"],
        "extras": ["Pairing and setup take only a couple of minutes.",
                   "Firmware updates add improvements over time.",
                   "The compact design fits easily on a desk or in a bag."],
        "care": ["Clean with a dry microfiber cloth.", "Keep away from liquids unless rated waterproof."],
    },
    "Kitchen": {
        "types": [
            ("Air Fryer", 75, sizes("{v}-quart", [2, 4, 5, 6, 8], 5, 0.6)),
            ("Chef's Knife", 40, sizes("{v}-inch", [6, 8, 10], 8, 0.4)),
            ("Cookware Set", 120, sizes("{v}-piece", [5, 8, 10, 12, 15], 10, 0.6)),
            ("Blender", 65, sizes("{v} oz", [24, 48, 64, 72], 48, 0.5)),
            ("Drip Coffee Maker", 55, sizes("{v}-cup", [4, 8, 12, 14], 12, 0.4)),
            ("Food Storage Containers", 22, sizes("{v}-piece set", [10, 20, 30, 42], 20, 0.5, lead=False)),
            ("Dutch Oven", 60, sizes("{v:g}-quart", [3, 5.5, 7], 5.5, 0.6)),
        ],
        "materials": [
            ("stainless steel", 0.15, ("Air Fryer", "Chef's Knife", "Cookware Set", "Blender", "Drip Coffee Maker")),
            ("high-carbon steel", 0.20, ("Chef's Knife",)),
            ("ceramic", 0.05, ("Chef's Knife", "Cookware Set", "Dutch Oven")),
            ("nonstick aluminum", 0.0, ("Cookware Set",)),
            ("cast iron", 0.10, ("Cookware Set", "Dutch Oven")),
            ("enameled cast iron", 0.30, ("Dutch Oven",)),
            ("BPA-free plastic", -0.25, ("Air Fryer", "Blender", "Drip Coffee Maker", "Food Storage Containers")),
            ("borosilicate glass", 0.15, ("Food Storage Containers", "Drip Coffee Maker", "Blender")),
        ],
        "features": [
            ("Dishwasher Safe", "dishwasher-safe parts", 0.06,
             ("Air Fryer", "Cookware Set", "Blender", "Food Storage Containers")),
            ("Digital Touchscreen", "a digital touchscreen", 0.10, ("Air Fryer", "Drip Coffee Maker", "Blender")),
            ("Programmable", "programmable presets", 0.12, ("Air Fryer", "Drip Coffee Maker", "Blender")),
            ("Induction Compatible", "induction-compatible bases", 0.10, ("Cookware Set", "Dutch Oven")),
            ("Oven Safe", "oven-safe construction up to 500°F", 0.06,
             ("Cookware Set", "Dutch Oven", "Food Storage Containers")),
            ("Full Tang", "a full-tang design", 0.10, ("Chef's Knife",)),
            ("Ergonomic Handle", "an ergonomic handle", 0.04, ("Chef's Knife",)),
            ("Blade Guard", "a protective blade guard", 0.03, ("Chef's Knife",)),
            ("Gift Box", "a gift box", 0.05, ("Chef's Knife",)),
            ("Auto Shut-Off", "automatic shut-off", 0.04, ("Drip Coffee Maker", "Air Fryer")),
            ("Thermal Carafe", "a thermal carafe", 0.12, ("Drip Coffee Maker",)),
            ("Self-Cleaning", "a self-cleaning cycle", 0.06, ("Blender",)),
            ("Airtight Lids", "airtight snap-lock lids", 0.06, ("Food Storage Containers",)),
            ("Freezer Safe", "freezer-safe construction", 0.03, ("Food Storage Containers",)),
            ("Self-Basting Lid", "a self-basting lid", 0.06, ("Dutch Oven",)),
        ],
        "brands": {"budget": ["Panlo", "Cookiva"], "mid": ["Harth & Hale", "Mirabrook"],
                   "premium": ["Solenne", "Brennholt"]},
        "colours": ["Black", "Red", "White", "Sage Green", "Matte Gray", "Navy"],
        "uses": ["weeknight dinners", "meal prep", "small kitchens", "entertaining guests",
                 "home cooks of every level"],
        "extras": ["A quick-start recipe card helps you get going on day one.",
                   "Its footprint is modest enough to live on the counter.",
                   "Every piece is food-safe and tested before it ships."],
        "care": ["Hand wash with mild soap to keep the finish looking new.",
                 "Dry thoroughly after washing before you put it away."],
    },
    "Tools & Home Improvement": {
        "types": [
            ("Cordless Drill", 80, sizes("{v}V", [12, 18, 20, 40], 20, 0.6)),
            ("Circular Saw", 95, sizes("{v:g}-inch blade", [6.5, 7.25, 8.25], 7.25, 1.2, lead=False)),
            ("Socket Set", 45, sizes("{v}-piece", [40, 80, 120, 200], 80, 0.5)),
            ("Wet/Dry Shop Vacuum", 85, sizes("{v:g}-gallon", [2.5, 5, 9, 12, 16], 6, 0.5)),
            ("Air Compressor", 150, sizes("{v:g} HP", [1, 1.5, 2, 3.5], 2, 0.7)),
            ("Tape Measure", 14, sizes("{v} ft", [16, 25, 30, 35], 25, 0.35)),
            ("LED Shop Light", 30, sizes("Pack of {v}", [1, 2, 4, 6], 2, 0.6, lead=False)),
        ],
        "materials": [
            ("steel", 0.0, ("Socket Set", "Tape Measure", "Air Compressor", "LED Shop Light")),
            ("chrome vanadium steel", 0.12, ("Socket Set",)),
            ("aluminum", 0.10, ("LED Shop Light", "Circular Saw", "Tape Measure")),
            ("glass-filled nylon", 0.05, ("Cordless Drill", "Circular Saw")),
            ("plastic", -0.20, ("Cordless Drill", "Wet/Dry Shop Vacuum", "Tape Measure", "LED Shop Light")),
            ("stainless steel", 0.15, ("Wet/Dry Shop Vacuum", "Air Compressor")),
            ("magnesium", 0.18, ("Circular Saw", "Cordless Drill")),
        ],
        "features": [
            ("Brushless Motor", "a brushless motor", 0.25, ("Cordless Drill", "Circular Saw")),
            ("Battery Included", "a battery and charger included", 0.30, ("Cordless Drill", "Circular Saw")),
            ("LED Work Light", "an LED work light", 0.04, ("Cordless Drill", "Circular Saw")),
            ("Variable Speed", "variable speed control", 0.08, ("Cordless Drill",)),
            ("Laser Guide", "a laser guide", 0.06, ("Circular Saw",)),
            ("Carrying Case", "a hard carrying case", 0.08, ("Cordless Drill", "Socket Set")),
            ("Quick-Release", "quick-release ratchets", 0.06, ("Socket Set",)),
            ("SAE and Metric", "both SAE and metric sizes", 0.10, ("Socket Set",)),
            ("Blower Port", "a built-in blower port", 0.06, ("Wet/Dry Shop Vacuum",)),
            ("HEPA Filter", "a HEPA cartridge filter", 0.12, ("Wet/Dry Shop Vacuum",)),
            ("Oil-Free", "an oil-free pump", 0.08, ("Air Compressor",)),
            ("Quiet Operation", "quiet operation", 0.12, ("Air Compressor", "Wet/Dry Shop Vacuum")),
            ("Wheel Kit", "a wheel kit", 0.08, ("Air Compressor",)),
            ("Magnetic Hook", "a magnetic end hook", 0.05, ("Tape Measure",)),
            ("Auto Lock", "an auto-locking blade", 0.06, ("Tape Measure",)),
            ("Shock Resistant", "a shock-resistant case", 0.04, ("Tape Measure",)),
            ("Linkable", "linkable fixtures", 0.06, ("LED Shop Light",)),
            ("5000K Daylight", "5000K daylight output", 0.03, ("LED Shop Light",)),
            ("Motion Sensor", "a motion sensor", 0.10, ("LED Shop Light",)),
        ],
        "brands": {"budget": ["Fixby", "Torqo"], "mid": ["Ironvale", "Graddock"],
                   "premium": ["Haldstrom", "Ruttgen"]},
        "colours": ["Yellow", "Orange", "Red", "Black", "Blue"],
        "uses": ["DIY weekend projects", "home repairs", "the garage workshop", "contractors on the job site",
                 "renovation work"],
        "extras": ["The grip is shaped to reduce fatigue during long sessions.",
                   "Clear markings make it easy to use right out of the box.",
                   "It is tested for durability under regular workshop use."],
        "care": ["Wipe off dust and debris after each use.", "Store in a dry place to prevent corrosion."],
    },
    "Sports & Outdoors": {
        "types": [
            ("Yoga Mat", 28, sizes("{v} mm thick", [4, 6, 8, 10], 6, 0.4, lead=False)),
            ("Camping Tent", 120, sizes("{v}-person", [1, 2, 4, 6, 8], 4, 0.6)),
            ("Adjustable Dumbbells", 180, sizes("{v} lb", [25, 50, 75, 90], 50, 0.7)),
            ("Insulated Water Bottle", 24, sizes("{v} oz", [18, 24, 32, 40, 64], 32, 0.4)),
            ("Hiking Backpack", 65, sizes("{v}L", [20, 35, 50, 65], 35, 0.5)),
            ("Resistance Bands", 18, sizes("Set of {v}", [3, 5, 11], 5, 0.4, lead=False)),
        ],
        "materials": [
            ("TPE", -0.05, ("Yoga Mat", "Resistance Bands")),
            ("natural rubber", 0.12, ("Yoga Mat", "Resistance Bands")),
            ("cork", 0.15, ("Yoga Mat",)),
            ("latex", -0.05, ("Resistance Bands",)),
            ("ripstop nylon", 0.08, ("Camping Tent", "Hiking Backpack")),
            ("polyester", -0.10, ("Camping Tent", "Hiking Backpack")),
            ("cast iron", 0.0, ("Adjustable Dumbbells",)),
            ("steel", 0.08, ("Adjustable Dumbbells",)),
            ("stainless steel", 0.0, ("Insulated Water Bottle",)),
            ("BPA-free plastic", -0.30, ("Insulated Water Bottle",)),
        ],
        "features": [
            ("Non-Slip", "a non-slip textured surface", 0.04, ("Yoga Mat",)),
            ("Alignment Lines", "printed alignment lines", 0.05, ("Yoga Mat",)),
            ("Carrying Strap", "a carrying strap", 0.03, ("Yoga Mat", "Insulated Water Bottle")),
            ("Exercise Guide", "an illustrated exercise guide", 0.02, ("Yoga Mat", "Resistance Bands")),
            ("Waterproof", "waterproof construction", 0.12, ("Camping Tent", "Hiking Backpack")),
            ("Ultralight", "an ultralight build", 0.20, ("Camping Tent", "Hiking Backpack")),
            ("Instant Setup", "instant setup in about a minute", 0.10, ("Camping Tent",)),
            ("Quick-Select Dial", "a quick-select weight dial", 0.15, ("Adjustable Dumbbells",)),
            ("Storage Tray", "a storage tray", 0.05, ("Adjustable Dumbbells",)),
            ("App Tracking", "app-based workout tracking", 0.15, ("Adjustable Dumbbells",)),
            ("Leakproof Lid", "a leakproof lid", 0.04, ("Insulated Water Bottle",)),
            ("Cold for 24 Hours", "drinks kept cold for 24 hours", 0.08, ("Insulated Water Bottle",)),
            ("Dishwasher Safe", "dishwasher-safe parts", 0.04, ("Insulated Water Bottle",)),
            ("Hydration Sleeve", "a hydration sleeve", 0.05, ("Hiking Backpack",)),
            ("Rain Cover", "an included rain cover", 0.06, ("Hiking Backpack",)),
            ("Door Anchor", "a door anchor", 0.04, ("Resistance Bands",)),
            ("Handles and Ankle Straps", "foam handles and ankle straps", 0.08, ("Resistance Bands",)),
        ],
        "brands": {"budget": ["Movix", "Trailo"], "mid": ["Summitra", "Pacewell"],
                   "premium": ["Kestrion", "Altrevo"]},
        "colours": ["Black", "Forest Green", "Ocean Blue", "Charcoal", "Coral", "Sand"],
        "uses": ["home workouts", "weekend camping trips", "the gym", "hiking and trail days",
                 "outdoor adventures"],
        "extras": ["It packs down small enough for a car trunk or closet shelf.",
                   "Tested outdoors and in the gym by real athletes.",
                   "A simple design means there is little to go wrong."],
        "care": ["Rinse with fresh water and let it air dry.", "Store out of direct sunlight between uses."],
    },
    "Beauty & Personal Care": {
        "types": [
            ("Face Moisturizer", 24, sizes("{v} fl oz", [1.0, 1.7, 2.5, 3.4], 1.7, 0.6),
             ["Fragrance-Free", "Light Citrus", "Cucumber", "Unscented"]),
            ("Shampoo", 11, sizes("{v} fl oz", [8, 12, 16, 33.8], 12, 0.5),
             ["Fresh Mint", "Coconut", "Lavender", "Unscented"]),
            ("Hair Dryer", 50, sizes("{v}W", [1200, 1600, 1875, 2000], 1875, 0.8)),
            ("Electric Toothbrush", 45, sizes("Pack of {v}", [1, 2], 1, 0.7, lead=False)),
            ("Eau de Parfum", 65, sizes("{v} ml", [30, 50, 100], 50, 0.6),
             ["Amber & Vanilla", "Fresh Citrus", "White Musk", "Cedar & Sage"]),
            ("Nail Polish Set", 16, sizes("Set of {v}", [3, 6, 12], 6, 0.5, lead=False),
             ["Assorted Nudes", "Assorted Reds", "Pastel Shades", "Classic Shades"]),
        ],
        "materials": [
            ("shea butter", 0.0, ("Face Moisturizer", "Shampoo")),
            ("hyaluronic acid", 0.12, ("Face Moisturizer",)),
            ("argan oil", 0.08, ("Shampoo", "Face Moisturizer")),
            ("aloe vera", -0.08, ("Face Moisturizer", "Shampoo")),
            ("ceramic", 0.05, ("Hair Dryer",)),
            ("tourmaline ceramic", 0.15, ("Hair Dryer",)),
            ("plastic", -0.12, ("Hair Dryer", "Electric Toothbrush", "Nail Polish Set")),
            ("recycled plastic", -0.05, ("Electric Toothbrush",)),
            ("aluminum", 0.12, ("Electric Toothbrush",)),
            ("glass", 0.10, ("Eau de Parfum", "Nail Polish Set")),
            ("crystal glass", 0.25, ("Eau de Parfum",)),
        ],
        "features": [
            ("Dermatologist Tested", "a dermatologist-tested formula", 0.08, ("Face Moisturizer", "Shampoo")),
            ("SPF 30", "SPF 30 sun protection", 0.12, ("Face Moisturizer",)),
            ("Sulfate-Free", "a sulfate-free formula", 0.06, ("Shampoo",)),
            ("Vegan", "vegan, cruelty-free ingredients", 0.05,
             ("Face Moisturizer", "Shampoo", "Nail Polish Set", "Eau de Parfum")),
            ("Ionic Technology", "ionic technology for less frizz", 0.12, ("Hair Dryer",)),
            ("Diffuser Attachment", "a diffuser attachment", 0.05, ("Hair Dryer",)),
            ("Foldable Handle", "a foldable handle", 0.03, ("Hair Dryer",)),
            ("Pressure Sensor", "a pressure sensor", 0.10, ("Electric Toothbrush",)),
            ("Rechargeable", "a rechargeable battery", 0.10, ("Electric Toothbrush",)),
            ("Smart Timer", "a two-minute smart timer", 0.05, ("Electric Toothbrush",)),
            ("Travel Case", "a travel case", 0.08, ("Electric Toothbrush", "Eau de Parfum", "Nail Polish Set")),
            ("Long-Lasting", "a long-lasting scent", 0.10, ("Eau de Parfum",)),
            ("Gift Box", "an elegant gift box", 0.08, ("Eau de Parfum", "Nail Polish Set")),
            ("Quick-Dry", "a quick-dry formula", 0.05, ("Nail Polish Set",)),
        ],
        "brands": {"budget": ["Glowly", "Purelo"], "mid": ["Lunessa", "Velour Bay"],
                   "premium": ["Maison Orlay", "Elodrine"]},
        "colours": ["Rose Gold", "White", "Black", "Blush Pink", "Lilac"],
        "uses": ["daily routines", "sensitive skin", "travel bags", "gifting", "quick mornings"],
        "extras": ["It fits neatly on a bathroom shelf or vanity.",
                   "Made in small batches and checked for quality.",
                   "Suitable for all skin and hair types."],
        "care": ["Store in a cool, dry place away from direct sunlight.", "Keep the cap closed when not in use."],
    },
    "Toys & Games": {
        "types": [
            ("Building Blocks Set", 30, sizes("{v} pieces", [100, 250, 500, 1000], 250, 0.5, lead=False)),
            ("Jigsaw Puzzle", 16, sizes("{v}-piece", [300, 500, 1000, 2000], 1000, 0.3)),
            ("Remote Control Car", 40, sizes("{v} mph top speed", [10, 15, 25, 35], 15, 0.8, lead=False)),
            ("Board Game", 28, sizes("2-{v} players", [4, 6, 8], 4, 0.25, lead=False)),
            ("Plush Toy", 16, sizes("{v}-inch", [8, 12, 16, 24], 12, 0.6)),
            ("Kids Art Kit", 25, sizes("{v}-piece", [50, 100, 150, 200], 100, 0.45)),
        ],
        "materials": [
            ("ABS plastic", 0.0, ("Building Blocks Set", "Remote Control Car", "Kids Art Kit")),
            ("wood", 0.15, ("Building Blocks Set", "Jigsaw Puzzle", "Board Game", "Kids Art Kit")),
            ("recycled cardboard", -0.15, ("Jigsaw Puzzle", "Board Game")),
            ("recycled plastic", 0.05, ("Building Blocks Set",)),
            ("aluminum alloy", 0.15, ("Remote Control Car",)),
            ("plush polyester", 0.0, ("Plush Toy",)),
            ("organic cotton", 0.20, ("Plush Toy",)),
        ],
        "features": [
            ("STEM Learning", "STEM-focused learning", 0.08, ("Building Blocks Set", "Kids Art Kit",
                                                              "Remote Control Car")),
            ("Storage Box", "a storage box", 0.05, ("Building Blocks Set", "Kids Art Kit", "Jigsaw Puzzle")),
            ("Rechargeable Battery", "a rechargeable battery", 0.15, ("Remote Control Car",)),
            ("App Controlled", "app control", 0.20, ("Remote Control Car", "Building Blocks Set")),
            ("All-Terrain", "all-terrain tires", 0.08, ("Remote Control Car",)),
            ("Glow in the Dark", "glow-in-the-dark pieces", 0.04, ("Jigsaw Puzzle", "Building Blocks Set")),
            ("Poster Included", "a reference poster", 0.02, ("Jigsaw Puzzle",)),
            ("Expansion Pack", "an expansion pack", 0.15, ("Board Game",)),
            ("Award-Winning", "an award-winning design", 0.08, ("Board Game",)),
            ("Quick Play", "20-minute rounds", 0.02, ("Board Game",)),
            ("Machine Washable", "machine-washable fabric", 0.05, ("Plush Toy",)),
            ("Hypoallergenic", "hypoallergenic stuffing", 0.05, ("Plush Toy",)),
            ("Sound Effects", "built-in sound effects", 0.10, ("Plush Toy",)),
            ("Washable Markers", "washable markers", 0.04, ("Kids Art Kit",)),
        ],
        "brands": {"budget": ["Playzo", "Funbit"], "mid": ["Brightnook", "Wigglewood"],
                   "premium": ["Tinkerhaus", "Marvelwright"]},
        "colours": ["Multicolor", "Blue", "Red", "Rainbow", "Green", "Pink"],
        "uses": ["family game night", "birthday gifts", "rainy afternoons", "classrooms",
                 "kids aged 6 and up"],
        "extras": ["Adults tend to enjoy it just as much as the kids do.",
                   "Rounded edges and non-toxic finishes keep play safe.",
                   "Clear instructions make the first session easy."],
        "care": ["Wipe surfaces clean with a damp cloth.", "Keep small parts away from children under 3."],
    },
    "Office Products": {
        "types": [
            ("Office Chair", 150, sizes("{v} lb capacity", [250, 300, 400], 300, 0.6, lead=False)),
            ("Printer Paper", 9, labelled([("1 ream", 1), ("3 reams", 3), ("5 reams", 5), ("10 reams", 10)],
                                          1, 0.85), ["Bright White", "White"]),
            ("Gel Pens", 10, sizes("Pack of {v}", [12, 24, 48, 96], 24, 0.6, lead=False),
             ["Assorted Colors", "Black Ink", "Blue Ink"]),
            ("Standing Desk", 260, sizes("{v} x 24 inch", [40, 48, 55, 63], 48, 0.7, lead=False)),
            ("Label Maker", 35, sizes("{v} mm tape", [12, 18, 24], 12, 0.5, lead=False)),
            ("Paper Shredder", 70, sizes("{v}-sheet", [6, 8, 12, 18], 8, 0.7)),
            ("Desk Organizer", 22, sizes("{v}-compartment", [4, 6, 9], 6, 0.35)),
        ],
        "materials": [
            ("mesh fabric", 0.0, ("Office Chair",)),
            ("bonded leather", 0.10, ("Office Chair",)),
            ("genuine leather", 0.30, ("Office Chair",)),
            ("bamboo", 0.15, ("Standing Desk", "Desk Organizer")),
            ("steel", 0.05, ("Standing Desk", "Desk Organizer", "Paper Shredder")),
            ("engineered wood", -0.10, ("Standing Desk", "Desk Organizer")),
            ("plastic", -0.15, ("Gel Pens", "Label Maker", "Paper Shredder", "Desk Organizer")),
            ("aluminum", 0.20, ("Gel Pens", "Label Maker")),
            ("recycled paper", 0.10, ("Printer Paper",)),
            ("virgin wood pulp", 0.0, ("Printer Paper",)),
        ],
        "features": [
            ("Lumbar Support", "adjustable lumbar support", 0.12, ("Office Chair",)),
            ("Headrest", "a padded headrest", 0.10, ("Office Chair",)),
            ("4D Armrests", "4D armrests", 0.12, ("Office Chair",)),
            ("Acid-Free", "acid-free sheets", 0.05, ("Printer Paper",)),
            ("96 Bright", "a 96 brightness rating", 0.05, ("Printer Paper",)),
            ("Jam-Free", "jam-free performance", 0.03, ("Printer Paper", "Paper Shredder")),
            ("Quick-Dry Ink", "quick-dry ink", 0.05, ("Gel Pens",)),
            ("Refillable", "refillable cartridges", 0.08, ("Gel Pens",)),
            ("Fine Tip", "a fine 0.5 mm tip", 0.02, ("Gel Pens",)),
            ("Dual Motor", "a dual-motor lift", 0.22, ("Standing Desk",)),
            ("Memory Presets", "memory height presets", 0.08, ("Standing Desk",)),
            ("Cable Tray", "a cable management tray", 0.05, ("Standing Desk",)),
            ("Bluetooth", "Bluetooth printing from your phone", 0.18, ("Label Maker",)),
            ("Rechargeable", "a rechargeable battery", 0.12, ("Label Maker",)),
            ("QWERTY Keyboard", "a QWERTY keyboard", 0.05, ("Label Maker",)),
            ("Cross-Cut", "cross-cut shredding", 0.10, ("Paper Shredder",)),
            ("Auto Feed", "an auto-feed tray", 0.25, ("Paper Shredder",)),
            ("Pull-Out Drawer", "a pull-out drawer", 0.06, ("Desk Organizer",)),
            ("Phone Stand", "a built-in phone stand", 0.04, ("Desk Organizer",)),
            ("Rotating Base", "a 360-degree rotating base", 0.05, ("Desk Organizer",)),
        ],
        "brands": {"budget": ["Deskly", "Papero"], "mid": ["Officore", "Scribewell"],
                   "premium": ["Ardenfeld", "Corvello"]},
        "colours": ["Black", "White", "Gray", "Walnut", "Blue"],
        "uses": ["home offices", "school and university", "busy workplaces", "small businesses",
                 "daily paperwork"],
        "extras": ["It looks tidy and professional on any desk.",
                   "Designed to handle a full working day, every day.",
                   "Restocking and replacement parts are easy to find."],
        "care": ["Dust regularly with a dry cloth.", "Keep away from moisture and direct heat."],
    },
    "Automotive": {
        "types": [
            ("Portable Jump Starter", 70, sizes("{v}A peak", [1000, 1500, 2000, 3000], 1500, 0.6)),
            ("All-Weather Floor Mats", 35, sizes("{v}-piece set", [2, 3, 4], 4, 0.5, lead=False)),
            ("Dash Cam", 60, labelled([("1080p", 1080), ("1440p", 1440), ("4K", 2160)], 1440, 0.9, lead=True)),
            ("Tire Inflator", 40, sizes("{v} PSI", [100, 120, 150], 120, 0.6)),
            ("Car Wax", 14, sizes("{v} oz", [8, 16, 32], 16, 0.5)),
            ("Windshield Wiper Blades", 18, sizes("{v}-inch", [16, 20, 24, 26], 22, 0.3)),
            ("Car Seat Covers", 40, sizes("{v}-piece", [2, 5, 9], 5, 0.45)),
        ],
        "materials": [
            ("rubber", 0.0, ("All-Weather Floor Mats", "Windshield Wiper Blades")),
            ("TPE", 0.10, ("All-Weather Floor Mats",)),
            ("silicone", 0.15, ("Windshield Wiper Blades",)),
            ("ABS plastic", -0.10, ("Portable Jump Starter", "Dash Cam", "Tire Inflator")),
            ("aluminum", 0.12, ("Portable Jump Starter", "Dash Cam", "Tire Inflator")),
            ("carnauba", 0.15, ("Car Wax",)),
            ("synthetic polymer", 0.0, ("Car Wax",)),
            ("neoprene", 0.15, ("Car Seat Covers",)),
            ("polyester", -0.10, ("Car Seat Covers",)),
            ("faux leather", 0.20, ("Car Seat Covers",)),
        ],
        "features": [
            ("LCD Display", "an LCD display", 0.06, ("Portable Jump Starter", "Tire Inflator")),
            ("USB Charging", "USB charging ports", 0.05, ("Portable Jump Starter",)),
            ("Air Compressor", "a built-in air compressor", 0.25, ("Portable Jump Starter",)),
            ("LED Flashlight", "an LED flashlight", 0.03, ("Portable Jump Starter", "Tire Inflator")),
            ("Custom Fit", "a custom-fit, laser-measured design", 0.20, ("All-Weather Floor Mats",)),
            ("Raised Edges", "raised edges to trap spills", 0.05, ("All-Weather Floor Mats",)),
            ("Odorless", "an odorless material", 0.03, ("All-Weather Floor Mats",)),
            ("Night Vision", "night vision", 0.10, ("Dash Cam",)),
            ("GPS", "built-in GPS", 0.12, ("Dash Cam",)),
            ("Front and Rear Cameras", "front and rear cameras", 0.30, ("Dash Cam",)),
            ("Wi-Fi", "Wi-Fi app control", 0.10, ("Dash Cam",)),
            ("Auto Shut-Off", "automatic shut-off at the set pressure", 0.05, ("Tire Inflator",)),
            ("Cordless", "cordless operation", 0.15, ("Tire Inflator",)),
            ("UV Protection", "UV protection", 0.05, ("Car Wax",)),
            ("Water Beading", "hydrophobic water beading", 0.06, ("Car Wax",)),
            ("Microfiber Towel", "a microfiber towel", 0.04, ("Car Wax",)),
            ("All-Season", "all-season performance", 0.05, ("Windshield Wiper Blades",)),
            ("Easy Install", "a one-click install adapter", 0.03, ("Windshield Wiper Blades",)),
            ("Beam Design", "a beam-style frame", 0.08, ("Windshield Wiper Blades",)),
            ("Waterproof", "waterproof fabric", 0.08, ("Car Seat Covers",)),
            ("Airbag Compatible", "airbag-compatible side seams", 0.06, ("Car Seat Covers",)),
            ("Machine Washable", "machine-washable covers", 0.03, ("Car Seat Covers",)),
        ],
        "brands": {"budget": ["Rodix", "Autoly"], "mid": ["Drivara", "Motorvale"],
                   "premium": ["Veltrano", "Graustark"]},
        "colours": ["Black", "Gray", "Beige", "Red", "Blue"],
        "uses": ["daily commuting", "road trips", "cars, trucks and SUVs", "roadside emergencies",
                 "weekend car care"],
        "extras": ["It stores easily in the trunk or glove box.",
                   "Fits most cars, trucks and SUVs.",
                   "Check your vehicle manual for the correct fit before ordering."],
        "care": ["Wipe clean with a damp cloth and let it dry.", "Store away from extreme heat."],
    },
    "Pet Supplies": {
        "types": [
            ("Dry Dog Food", 38, sizes("{v} lb bag", [4, 15, 24, 30, 40], 24, 0.7, lead=False),
             ["Adult", "Puppy", "Senior", "Small Breed"]),
            ("Clumping Cat Litter", 18, sizes("{v} lb", [10, 20, 28, 40], 20, 0.6),
             ["Unscented", "Lavender", "Fresh Scent"]),
            ("Orthopedic Dog Bed", 45, sizes("{v}-inch", [24, 30, 36, 42, 48], 36, 1.0)),
            ("Cat Tree", 70, sizes("{v} inches tall", [34, 48, 60, 72], 48, 0.9, lead=False)),
            ("Dog Chew Toys", 12, sizes("Pack of {v}", [3, 6, 12], 6, 0.5, lead=False)),
            ("Automatic Pet Feeder", 60, sizes("{v}L", [2, 4, 6], 4, 0.4)),
        ],
        "materials": [
            ("real chicken", 0.0, ("Dry Dog Food",)),
            ("wild-caught salmon", 0.20, ("Dry Dog Food",)),
            ("lamb", 0.10, ("Dry Dog Food",)),
            ("chicken meal", -0.15, ("Dry Dog Food",)),
            ("clay", 0.0, ("Clumping Cat Litter",)),
            ("silica crystals", 0.25, ("Clumping Cat Litter",)),
            ("walnut shell", 0.15, ("Clumping Cat Litter",)),
            ("memory foam", 0.20, ("Orthopedic Dog Bed",)),
            ("egg-crate foam", 0.0, ("Orthopedic Dog Bed",)),
            ("polyester fill", -0.15, ("Orthopedic Dog Bed",)),
            ("sisal and plush", 0.0, ("Cat Tree",)),
            ("solid wood", 0.30, ("Cat Tree",)),
            ("particle board", -0.15, ("Cat Tree",)),
            ("natural rubber", 0.10, ("Dog Chew Toys",)),
            ("nylon", 0.0, ("Dog Chew Toys",)),
            ("cotton rope", -0.10, ("Dog Chew Toys",)),
            ("ABS plastic", -0.05, ("Automatic Pet Feeder",)),
            ("stainless steel", 0.15, ("Automatic Pet Feeder",)),
        ],
        "features": [
            ("Grain-Free", "a grain-free recipe", 0.12, ("Dry Dog Food",)),
            ("No Artificial Flavors", "no artificial flavors or preservatives", 0.05, ("Dry Dog Food",)),
            ("Probiotics", "added probiotics", 0.08, ("Dry Dog Food",)),
            ("Odor Control", "7-day odor control", 0.06, ("Clumping Cat Litter",)),
            ("Low Dust", "a 99% dust-free formula", 0.08, ("Clumping Cat Litter",)),
            ("Lightweight", "a lightweight formula", 0.06, ("Clumping Cat Litter",)),
            ("Washable Cover", "a removable, washable cover", 0.06, ("Orthopedic Dog Bed",)),
            ("Waterproof Liner", "a waterproof liner", 0.08, ("Orthopedic Dog Bed",)),
            ("Non-Skid Bottom", "a non-skid bottom", 0.03, ("Orthopedic Dog Bed",)),
            ("Condo", "a cozy condo", 0.08, ("Cat Tree",)),
            ("Hammock", "a hanging hammock", 0.05, ("Cat Tree",)),
            ("Scratching Posts", "sisal scratching posts", 0.04, ("Cat Tree",)),
            ("Squeaker", "built-in squeakers", 0.02, ("Dog Chew Toys",)),
            ("Treat Dispensing", "a treat-dispensing design", 0.08, ("Dog Chew Toys",)),
            ("Dental Ridges", "dental cleaning ridges", 0.04, ("Dog Chew Toys",)),
            ("Wi-Fi", "Wi-Fi app scheduling", 0.20, ("Automatic Pet Feeder",)),
            ("Voice Recorder", "a voice recorder", 0.05, ("Automatic Pet Feeder",)),
            ("Battery Backup", "dual power with battery backup", 0.06, ("Automatic Pet Feeder",)),
            ("HD Camera", "an HD camera", 0.25, ("Automatic Pet Feeder",)),
        ],
        "brands": {"budget": ["Pawsy", "Petlo"], "mid": ["Furwell", "Kindlepaw"],
                   "premium": ["Canelle & Co", "Hundberg"]},
        "colours": ["Gray", "Brown", "Beige", "Navy", "Charcoal"],
        "uses": ["dogs of all sizes", "indoor cats", "multi-pet homes", "busy pet parents",
                 "senior pets"],
        "extras": ["Vets and pet owners helped shape the design.",
                   "Introduce it gradually so your pet can get used to it.",
                   "Pets tend to take to it within a day or two."],
        "care": ["Spot clean as needed with mild soap.", "Store in a cool, dry place."],
    },
    "Home & Furniture": {
        "types": [
            ("Bookshelf", 90, sizes("{v}-shelf", [3, 4, 5, 6], 5, 0.5)),
            ("Area Rug", 80, labelled([("2 x 3 ft", 6), ("4 x 6 ft", 24), ("5 x 7 ft", 35), ("8 x 10 ft", 80),
                                       ("9 x 12 ft", 108)], 35, 0.6)),
            ("Sheet Set", 40, labelled([("Twin", 1.0), ("Full", 1.15), ("Queen", 1.3), ("King", 1.5),
                                        ("California King", 1.55)], 1.3, 1.0, lead=True)),
            ("Throw Pillow Covers", 18, sizes("Set of {v}", [2, 4, 6], 2, 0.6, lead=False)),
            ("Table Lamp", 35, sizes("{v}-inch", [14, 19, 24, 28], 19, 0.6)),
            ("Sofa", 550, sizes("{v}-inch", [60, 72, 84, 96], 84, 1.2)),
            ("Blackout Curtains", 28, sizes("{v} inch long", [63, 84, 96, 108], 84, 0.5, lead=False)),
        ],
        "materials": [
            ("solid wood", 0.25, ("Bookshelf",)),
            ("engineered wood", -0.15, ("Bookshelf",)),
            ("metal", 0.0, ("Bookshelf", "Table Lamp")),
            ("wool", 0.30, ("Area Rug",)),
            ("jute", 0.10, ("Area Rug",)),
            ("polypropylene", -0.15, ("Area Rug",)),
            ("cotton", 0.05, ("Sheet Set", "Throw Pillow Covers", "Blackout Curtains")),
            ("linen", 0.25, ("Sheet Set", "Throw Pillow Covers", "Blackout Curtains")),
            ("microfiber", -0.20, ("Sheet Set",)),
            ("velvet", 0.15, ("Throw Pillow Covers", "Sofa", "Blackout Curtains")),
            ("polyester", -0.15, ("Throw Pillow Covers", "Blackout Curtains", "Sofa")),
            ("ceramic", 0.10, ("Table Lamp",)),
            ("glass", 0.05, ("Table Lamp",)),
            ("top-grain leather", 0.40, ("Sofa",)),
        ],
        "features": [
            ("Adjustable Shelves", "adjustable shelves", 0.06, ("Bookshelf",)),
            ("Anti-Tip Kit", "an anti-tip wall kit", 0.02, ("Bookshelf",)),
            ("Tool-Free Assembly", "tool-free assembly", 0.05, ("Bookshelf", "Sofa")),
            ("Non-Shedding", "a non-shedding pile", 0.05, ("Area Rug",)),
            ("Hand-Woven", "hand-woven construction", 0.25, ("Area Rug",)),
            ("Stain Resistant", "stain-resistant fibers", 0.06, ("Area Rug", "Sofa")),
            ("Deep Pockets", "deep pockets up to 16 inches", 0.05, ("Sheet Set",)),
            ("Cooling", "a cooling weave", 0.10, ("Sheet Set",)),
            ("Wrinkle Resistant", "a wrinkle-resistant finish", 0.04, ("Sheet Set", "Blackout Curtains")),
            ("Hidden Zipper", "hidden zippers", 0.03, ("Throw Pillow Covers",)),
            ("Inserts Included", "down-alternative inserts", 0.30, ("Throw Pillow Covers",)),
            ("Reversible", "a reversible design", 0.04, ("Throw Pillow Covers",)),
            ("USB Port", "a USB charging port", 0.08, ("Table Lamp",)),
            ("Dimmable", "a dimmable touch control", 0.10, ("Table Lamp",)),
            ("LED Bulb Included", "an LED bulb", 0.04, ("Table Lamp",)),
            ("Pull-Out Sleeper", "a pull-out sleeper", 0.30, ("Sofa",)),
            ("Removable Cushions", "removable cushion covers", 0.06, ("Sofa",)),
            ("Thermal Insulated", "thermal insulation", 0.08, ("Blackout Curtains",)),
            ("Grommet Top", "a grommet top", 0.02, ("Blackout Curtains",)),
        ],
        "brands": {"budget": ["Homzy", "Roomly"], "mid": ["Linden Row", "Oakhearth"],
                   "premium": ["Maison Verlaine", "Thorsby"]},
        "colours": ["Ivory", "Charcoal", "Walnut", "Sage", "Navy", "Terracotta"],
        "uses": ["living rooms", "bedrooms", "first apartments", "guest rooms", "cozy reading corners"],
        "extras": ["The clean lines suit modern and traditional rooms alike.",
                   "Colours may look slightly different depending on your screen.",
                   "It arrives carefully packed to avoid damage in transit."],
        "care": ["Vacuum or dust regularly to keep it fresh.", "Blot spills right away with a clean cloth."],
    },
    "Musical Instruments": {
        "types": [
            ("Acoustic Guitar", 180, labelled([("3/4 size", 0.75), ("full size", 1.0), ("jumbo body", 1.15)],
                                              1.0, 1.2)),
            ("Digital Piano", 230, sizes("{v}-key", [61, 76, 88], 88, 1.5)),
            ("Guitar Strings", 8, sizes("Pack of {v} sets", [1, 3, 5], 1, 0.7, lead=False)),
            ("Ukulele", 55, labelled([("soprano", 21), ("concert", 23), ("tenor", 26), ("baritone", 30)],
                                     23, 1.5)),
            ("Guitar Amplifier", 120, sizes("{v}W", [10, 20, 40, 100], 20, 0.5)),
            ("Drumsticks", 12, labelled([("1 pair", 1), ("4 pairs", 4), ("12 pairs", 12)], 1, 0.7),
             ["Natural", "Black", "Red"]),
        ],
        "materials": [
            ("solid spruce", 0.30, ("Acoustic Guitar", "Ukulele")),
            ("mahogany", 0.15, ("Acoustic Guitar", "Ukulele")),
            ("laminated wood", -0.25, ("Acoustic Guitar", "Ukulele")),
            ("koa", 0.35, ("Ukulele",)),
            ("plastic", -0.10, ("Digital Piano",)),
            ("wood cabinet", 0.20, ("Digital Piano",)),
            ("plywood", 0.10, ("Guitar Amplifier",)),
            ("MDF", -0.10, ("Guitar Amplifier",)),
            ("nickel-plated steel", 0.0, ("Guitar Strings",)),
            ("phosphor bronze", 0.10, ("Guitar Strings",)),
            ("coated bronze", 0.35, ("Guitar Strings",)),
            ("hickory", 0.0, ("Drumsticks",)),
            ("maple", -0.05, ("Drumsticks",)),
            ("carbon fiber", 0.60, ("Drumsticks",)),
        ],
        "features": [
            ("Built-in Tuner", "a built-in tuner", 0.08, ("Acoustic Guitar", "Ukulele")),
            ("Gig Bag", "a padded gig bag", 0.10, ("Acoustic Guitar", "Ukulele")),
            ("Cutaway", "a cutaway body", 0.06, ("Acoustic Guitar",)),
            ("Pickup", "an onboard pickup", 0.18, ("Acoustic Guitar", "Ukulele")),
            ("Weighted Keys", "fully weighted hammer-action keys", 0.25, ("Digital Piano",)),
            ("USB-MIDI", "USB-MIDI connectivity", 0.06, ("Digital Piano",)),
            ("Bluetooth", "Bluetooth audio", 0.10, ("Digital Piano", "Guitar Amplifier")),
            ("Sustain Pedal", "a sustain pedal", 0.04, ("Digital Piano",)),
            ("Headphone Output", "a headphone output", 0.02, ("Digital Piano", "Guitar Amplifier")),
            ("Built-in Effects", "built-in effects", 0.12, ("Guitar Amplifier",)),
            ("Looper", "a looper", 0.08, ("Guitar Amplifier",)),
            ("Light Gauge", "a light gauge", 0.02, ("Guitar Strings",)),
            ("Corrosion Resistant", "a corrosion-resistant coating", 0.08, ("Guitar Strings",)),
            ("Bright Tone", "a bright, balanced tone", 0.02, ("Guitar Strings",)),
            ("Nylon Tips", "nylon tips", 0.04, ("Drumsticks",)),
            ("Anti-Slip Grip", "an anti-slip grip", 0.05, ("Drumsticks",)),
            ("Stick Bag", "a stick bag", 0.08, ("Drumsticks",)),
        ],
        "brands": {"budget": ["Tunzy", "Strumbo"], "mid": ["Cadenza Road", "Harmona"],
                   "premium": ["Aurelstein", "Valdivar"]},
        "colours": ["Natural", "Sunburst", "Black", "White", "Cherry"],
        "uses": ["beginners", "home practice", "small gigs", "music lessons", "recording at home"],
        "extras": ["It holds its tuning well and sounds good straight out of the box.",
                   "Teachers recommend it for steady daily practice.",
                   "The playable setup makes it comfortable for long sessions."],
        "care": ["Wipe down after playing to remove fingerprints.", "Keep it away from radiators and damp rooms."],
    },
}

BRAND_TIERS = {brand: tier for cat in CATALOG.values() for tier, brands in cat["brands"].items() for brand in brands}

# ---------------------------------------------------------------- description templates (several per slot)
INTRO = {
    "budget": [
        "The {brand} {type} is a budget-friendly option for anyone who wants the basics done right.",
        "{brand} is a budget brand, and this {tl} keeps things simple and affordable.",
        "Built to a budget, this {tl} from value label {brand} covers everyday needs at a low price.",
        "Looking for an inexpensive {tl}? {brand}, an entry-level budget brand, sticks to the essentials.",
    ],
    "mid": [
        "The {brand} {type} is a dependable mid-range choice that balances quality and price.",
        "{brand} is a mid-range brand known for sensible, well-made products, and this {tl} is no exception.",
        "This {tl} from {brand} sits squarely in the mid-range: solid build, fair price.",
        "A reliable mid-range pick, the {brand} {type} is designed for daily use.",
    ],
    "premium": [
        "The {brand} {type} comes from a premium brand known for meticulous design and top-tier components.",
        "{brand} is a premium, high-end maker, and this {tl} shows it in every detail.",
        "Part of the premium {brand} collection, this {tl} is built for people who want the best.",
        "Crafted by premium brand {brand}, this {tl} delivers professional-grade quality.",
    ],
}
SIZE = ["This listing is for the {size} version.", "Size: {size}.", "You are getting the {size} option.",
        "It comes in the {size} configuration.", "The model shown here is the {size} one."]
MATERIAL = ["It is made with {material}.", "The {tl} is made with {material}.", "Made with {material}.",
            "{Material} is the main material here.", "The key material is {material}."]
FEATURES = ["Key features include {features}.", "Highlights: {features}.", "You also get {features}.",
            "It stands out with {features}.", "Notable extras are {features}."]
USE = ["Ideal for {use}.", "A good fit for {use}.", "Perfect for {use}.", "Great for {use}.",
       "Well suited to {use}."]
BOX = ["In the box: the {tl} and a quick-start guide.", "The package includes the {tl} and a printed manual.",
       "Everything you need to get started is in the box.", "Ships in recyclable, frustration-free packaging."]
WARRANTY = ["Backed by a {n}-year limited warranty.", "A {n}-year warranty covers manufacturing defects.",
            "Includes a {n}-year warranty and friendly customer support."]
TITLE = ["{brand} {type}, {size}, {feat}, {colour}", "{brand} {type} {size} with {feat}, {colour}",
         "{brand} {type}, {Material}, {size}, {feat}, {colour}", "{brand} {type} - {size} - {feat} - {colour}"]
TITLE_LEAD = ["{brand} {size} {type}, {feat}, {colour}", "{brand} {size} {type} with {feat} - {colour}"]


KEEP_CASE = {"Dutch"}


def _cap(text: str) -> str:
    """Capitalise each word that starts lower-case ("BPA-free plastic" -> "BPA-free Plastic")."""
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _lower_type(name: str) -> str:
    """"Smart TV" -> "smart TV", "USB-C Charging Cable" -> "USB-C charging cable"."""
    return " ".join(w if w == w.upper() or w in KEEP_CASE else w.lower() for w in name.split())


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + (", and " if len(phrases) > 2 else " and ") + phrases[-1]


def _allowed(entries, type_name: str) -> list:
    return [e for e in entries if e[-1] is None or type_name in e[-1]]


def _check_catalog() -> None:
    for cat, spec in CATALOG.items():
        names = {t[0] for t in spec["types"]}
        for entry in spec["materials"] + spec["features"]:
            assert entry[-1] is None or set(entry[-1]) <= names, (cat, entry)
        for t in spec["types"]:
            assert len(_allowed(spec["materials"], t[0])) >= 1 and len(_allowed(spec["features"], t[0])) >= 3, t


_check_catalog()


def draw_attributes(rng: random.Random) -> dict:
    """The latent attributes of one item (everything that drives its price)."""
    category = rng.choice(sorted(CATALOG))
    spec = CATALOG[category]
    ptype = rng.choice(spec["types"])
    type_name, base, scheme = ptype[:3]
    variants = ptype[3] if len(ptype) > 3 else spec["colours"]
    tier = rng.choice(["budget", "mid", "premium"])
    size_label, size_value = rng.choice(scheme["options"])
    material = rng.choice(_allowed(spec["materials"], type_name))
    features = rng.sample(_allowed(spec["features"], type_name), rng.choice([1, 2, 2, 3]))
    return {"category": category, "type": type_name, "base": base, "tier": tier,
            "brand": rng.choice(spec["brands"][tier]), "size": size_label,
            "size_effect": scheme["k"] * math.log(size_value / scheme["ref"]), "size_lead": scheme["lead"],
            "material": material[0], "material_effect": material[1],
            "features": [(f[0], f[1]) for f in features], "feature_effect": sum(f[2] for f in features),
            "colour": rng.choice(variants)}


def expected_log_price(attrs: dict) -> float:
    """log(price) before noise and clipping."""
    return (math.log(attrs["base"]) + TIER_EFFECT[attrs["tier"]] + attrs["size_effect"]
            + attrs["material_effect"] + attrs["feature_effect"])


def _words(sentences: list[str]) -> int:
    return sum(len(s.split()) for s in sentences)


def render(attrs: dict, rng: random.Random) -> tuple[str, str]:
    """Title and description for the attributes: both state everything that drives the price."""
    spec = CATALOG[attrs["category"]]
    material = attrs["material"]
    f = {"brand": attrs["brand"], "type": attrs["type"], "tl": _lower_type(attrs["type"]), "size": attrs["size"],
         "material": material, "Material": material[:1].upper() + material[1:], "feat": attrs["features"][0][0],
         "colour": attrs["colour"]}
    templates = TITLE + (TITLE_LEAD if attrs["size_lead"] else [])
    title = rng.choice(templates).format(**dict(f, Material=_cap(material)))

    body = [rng.choice(SIZE).format(**f), rng.choice(MATERIAL).format(**f),
            rng.choice(FEATURES).format(features=_join([p for _, p in attrs["features"]]))]
    rng.shuffle(body)
    sentences = [rng.choice(INTRO[attrs["tier"]]).format(**f)] + body + [
        rng.choice(USE).format(use=rng.choice(spec["uses"]))]
    filler = [rng.choice(spec["extras"]), rng.choice(spec["care"]), rng.choice(BOX).format(**f),
              rng.choice(WARRANTY).format(n=rng.choice([1, 1, 2, 3]))]
    rng.shuffle(filler)
    n_filler = rng.choice([1, 2, 2, 3, 4])
    while n_filler < len(filler) and _words(sentences + filler[:n_filler]) < MIN_WORDS:
        n_filler += 1
    while n_filler > 0 and _words(sentences + filler[:n_filler]) > MAX_WORDS:
        n_filler -= 1
    return title, " ".join(sentences + filler[:n_filler])


def generate_detailed(n: int, seed: int) -> list[tuple[dict, dict]]:
    """(item, latent attributes) pairs; item i depends only on (seed, i)."""
    out = []
    for i in range(n):
        rng = random.Random(f"price-{seed}-{i}")
        attrs = draw_attributes(rng)
        title, description = render(attrs, rng)
        log_price = expected_log_price(attrs) + rng.gauss(0.0, NOISE_SIGMA)
        price = round(min(max(math.exp(log_price), MIN_PRICE), MAX_PRICE), 2)
        out.append(({"title": title, "description": description, "category": attrs["category"],
                     "price": price}, attrs))
    return out


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[dict]:
    return [item for item, _ in generate_detailed(n, seed)]


def split(items: list[dict], seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    """Seeded shuffle, then 80 / 5 / 15 % into train / valid / test."""
    order = list(range(len(items)))
    random.Random(f"split-{seed}").shuffle(order)
    n_valid = round(len(items) * SPLIT_SHARES["valid"])
    n_test = round(len(items) * SPLIT_SHARES["test"])
    n_train = len(items) - n_valid - n_test
    return {"train": [items[i] for i in order[:n_train]],
            "valid": [items[i] for i in order[n_train:n_train + n_valid]],
            "test": [items[i] for i in order[n_train + n_valid:]]}


def _wrap(head: str, parts: list[str], width: int = 106) -> list[str]:
    """Wrap a comma-separated list between its parts, never inside one."""
    lines, line = [], head
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip() != head.strip():
            lines.append(line)
            line = "        " + piece
        else:
            line = f"{line} {piece}" if line.strip() else line + piece
    return lines + [line]


def describe() -> str:
    """The per-category coefficient table (also in the module docstring; a test keeps the two in step)."""
    lines = []
    for cat in sorted(CATALOG):
        spec = CATALOG[cat]
        lines.append(f"{cat}. Brands: " + "; ".join(f"{t} {', '.join(spec['brands'][t])}"
                                                   for t in ("budget", "mid", "premium")))
        for ptype in spec["types"]:
            name, base, sc = ptype[:3]
            lines += _wrap(f"    {name}: base ${base}; size effect {sc['k']:g} * log(v / {sc['ref']:g});",
                           sc["show"].split(", "))
        lines += _wrap("    Materials:", [f"{m[0]} {m[1]:+.2f}" for m in spec["materials"]])
        lines += _wrap("    Features:", [f"{f[0]} {f[2]:+.2f}" for f in spec["features"]])
    return "\n".join(lines)


def write(items: list[dict], seed: int, out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in split(items, seed).items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
            for r in rows:
                fh.write(json.dumps({k: r[k] for k in ("title", "description", "category", "price")},
                                    ensure_ascii=False) + "\n")
        counts[name] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--n", type=int, default=DEFAULT_N)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--describe", action="store_true", help="print the price coefficients and exit")
    args = p.parse_args(argv)
    if args.describe:
        print(describe())
        return
    counts = write(generate(args.n, args.seed), args.seed, args.out)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()), f"items written to {args.out}")


if __name__ == "__main__":
    main()
