"""Deterministic hospital-like corpus: a seeded directory tree and a seeded "next day" of changes.

Owns: ``generate()`` (HL7 v2 messages, FHIR JSON, DICOM-like imaging, PDF-like reports, one SQL dump,
logs, empty directories, a relative symlink and a hard link, at a chosen total size), ``mutate()``
(edits, appends, SQL rows changed in place and inserted mid-file, new studies, deletes, one renamed
directory) and ``scan()`` (counts of an existing tree).

Same arguments give byte-identical trees on every machine and run. Why that holds, and what must not
change: only integer draws, ``random()``, ``choices()`` and ``randbytes()`` of ``random.Random`` are used
(never ``gauss``/``expovariate``: they go through libm, which may differ by one ULP between
platforms), pixel values are integer arithmetic, there is no clock, no set iteration, and every walk
is sorted. The size rule: bulk bytes come from integer lanes over a cached structure pool plus
``randbytes`` noise, so 1 GiB takes seconds, not minutes.

Must never: import replicator, hold a large file in memory (large files are written in pieces of at
most one imaging frame, 512 KiB), or write outside the root it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
from array import array
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from math import isqrt
from pathlib import Path
from random import Random

# Byte shares of the total; the SQL dump takes what is left (about a quarter).
SHARE_DCM, SHARE_PDF, SHARE_MSG, SHARE_LOG = 0.52, 0.10, 0.07, 0.05
SQL_SHARES = (("patients", 0.08), ("encounters", 0.27), ("lab_results", 0.65))
TODAY = date(2024, 3, 4)  # the corpus's "today"; fixed so the output never depends on the clock
FRAME_SIDE = 512  # pool images are 512 x 512 16-bit pixels: one frame = 512 KiB
FRAME_BYTES = FRAME_SIDE * FRAME_SIDE * 2
MIN_DCM = 200 * 1024

SITES = ("general", "st-marys", "north-clinic")
FIRST = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Lucas", "Mia",
         "Mateo", "Amelia", "Ethan", "Harper", "Aiden", "Evelyn", "Levi", "Aria", "Amir", "Chloe", "Hiroshi",
         "Fatima", "Jonas", "Ingrid", "Kwame", "Priya", "Diego", "Mei", "Tomasz")
LAST = ("Smith", "Johnson", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez",
        "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez",
        "Thompson", "White", "Harris", "Nguyen", "Kowalski", "Okafor", "Tanaka", "Schmidt", "Rossi", "Dubois")
STREETS = ("Oak St", "Maple Ave", "Cedar Ln", "Elm St", "Pine Rd", "Birch Way", "Lakeview Dr", "Hillcrest Rd")
CITIES = (("Springfield", "55501"), ("Riverton", "55502"), ("Fairview", "55503"), ("Lakeside", "55504"))
DEPTS = ("CARD", "ONC", "ORTH", "NEUR", "PEDS", "EMER", "RADI", "GAST")
DOCTORS = tuple(f"D{1000 + i}^{LAST[i * 7 % len(LAST)]}^{FIRST[i * 11 % len(FIRST)]}" for i in range(24))
# LOINC code, name, unit, normal low and high in tenths of the unit.
LABS = (("2345-7", "Glucose", "mg/dL", 700, 990), ("2160-0", "Creatinine", "mg/dL", 6, 13),
        ("6690-2", "WBC", "10*3/uL", 45, 110), ("718-7", "Hemoglobin", "g/dL", 120, 175),
        ("777-3", "Platelets", "10*3/uL", 1500, 4000), ("2951-2", "Sodium", "mmol/L", 1350, 1450),
        ("2823-3", "Potassium", "mmol/L", 35, 51), ("1742-6", "ALT", "U/L", 70, 560),
        ("1920-8", "AST", "U/L", 80, 480), ("2093-3", "Cholesterol", "mg/dL", 1250, 2000),
        ("4548-4", "HbA1c", "%", 40, 56))
# Modality, SOP class, rows, columns, frames per file (lo, hi), files per series (lo, hi), weight.
MODALITIES = (("CT", "1.2.840.10008.5.1.4.1.1.2", 512, 512, (1, 1), (6, 40), 5),
              ("MR", "1.2.840.10008.5.1.4.1.1.4", 384, 384, (1, 1), (8, 30), 3),
              ("CR", "1.2.840.10008.5.1.4.1.1.1", 2140, 1760, (1, 1), (1, 2), 2),
              ("US", "1.2.840.10008.5.1.4.1.1.3.1", 480, 640, (4, 20), (1, 3), 1))
MG = ("MG", "1.2.840.10008.5.1.4.1.1.1.2", 4096, 3328, (1, 1), (2, 4), 1)  # 26 MiB each: big corpora only
FINDINGS = ("No acute cardiopulmonary abnormality.", "Mild degenerative change without fracture.",
            "Stable 4 mm pulmonary nodule, follow-up in 12 months recommended.",
            "No evidence of intracranial hemorrhage or mass effect.", "Small left pleural effusion, new.",
            "Postoperative changes, hardware intact.", "Findings discussed with the referring physician.")
LOG_SERVICES = ("hl7-interface", "pacs-gateway", "emr-app", "audit")


@dataclass
class CorpusStats:
    """Counts of a corpus tree; each directory entry counts once (a hard link's two names are two files)."""

    files: int = 0
    dirs: int = 0
    bytes: int = 0
    empty_dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    files_by_type: dict[str, int] = field(default_factory=dict)
    bytes_by_type: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        shares = " ".join(f"{k}={v * 100 / max(1, self.bytes):.1f}%" for k, v in sorted(self.bytes_by_type.items()))
        return (f"{self.files} files, {self.dirs} dirs ({self.empty_dirs} empty), {self.symlinks} symlinks, "
                f"{self.hardlinks} hard-linked, {self.bytes} bytes ({self.bytes / 2**20:.1f} MiB): {shares}")


@dataclass
class MutationStats:
    """What one ``mutate()`` changed. ``sql_insert_offset`` is where the dump first diverges from yesterday's."""

    edited: int = 0
    appended: int = 0
    edited_rows: int = 0
    inserted_rows: int = 0
    new_files: int = 0
    deleted: int = 0
    renamed_dirs: int = 0
    sql_insert_offset: int = -1

    def summary(self) -> str:
        return (f"edited {self.edited} files, appended to {self.appended} logs, {self.edited_rows} SQL rows "
                f"changed in place, {self.inserted_rows} inserted (first at byte {self.sql_insert_offset}), "
                f"{self.new_files} new files, {self.deleted} deleted, {self.renamed_dirs} dirs renamed")


# -- pixel data ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pixel_pool() -> tuple[bytes, ...]:
    """Four 512 x 512 12-bit "body slices": an ellipse of tissue over air, gradients and dome-shaped organs.

    Built once per process from a fixed seed with integer arithmetic only (bit-identical everywhere).
    """
    rng = Random(0x1D1C0)
    images = []
    for _ in range(4):
        cx, cy = 256 + rng.randrange(-20, 21), 256 + rng.randrange(-20, 21)
        ax, ay = rng.randrange(170, 240), rng.randrange(150, 230)
        tissue, sx, sy = rng.randrange(900, 1100), rng.randrange(-160, 161), rng.randrange(-160, 161)
        air_row = [rng.randrange(8, 40)] * FRAME_SIDE
        grad = [tissue + (x - 256) * sx // 256 for x in range(FRAME_SIDE)]
        blobs = []
        for _ in range(rng.randrange(5, 10)):
            r = rng.randrange(12, 90)
            bx, by = cx + rng.randrange(-ax // 2, ax // 2), cy + rng.randrange(-ay // 2, ay // 2)
            amp = rng.choice((rng.randrange(-350, -50), rng.randrange(80, 600), rng.randrange(900, 2200)))
            blobs.append((bx, by, r, amp, [max(0, r * r - (x - bx) ** 2) for x in range(FRAME_SIDE)]))
        img = array("H")
        for y in range(FRAME_SIDE):
            dy = y - cy
            if abs(dy) >= ay:
                img.extend(air_row)
                continue
            half = isqrt(ax * ax * (ay * ay - dy * dy)) // ay
            x0, x1 = max(0, cx - half), min(FRAME_SIDE, cx + half)
            shift = dy * sy // 256
            row = air_row[:x0] + [g + shift for g in grad[x0:x1]] + air_row[x1:]
            for bx, by, r, amp, prof in blobs:
                py, a, b = r * r - (y - by) ** 2, max(x0, bx - r), min(x1, bx + r)
                if py > 0 and a < b:
                    row[a:b] = [v + amp * py * p // r**4 for v, p in zip(row[a:b], prof[a:b])]
            img.extend(row)
        if sys.byteorder == "big":
            img.byteswap()  # the pool is little-endian on every machine
        images.append(img.tobytes())
    return tuple(images)


@lru_cache(maxsize=16)
def _lanes(value: int) -> int:
    """An int whose 16-bit little-endian lanes (one frame's worth) all hold ``value``."""
    return int.from_bytes(value.to_bytes(2, "little") * (FRAME_BYTES // 2), "little")


def _pixels(rng: Random, length: int):
    """Yield ``length`` bytes of 16-bit pixels, one frame (512 KiB) at a time: pool structure + low-bit noise.

    Lane arithmetic on big ints keeps this at C speed; no lane can carry (12-bit pool + 8-bit noise + offset
    stays below 2**16). Noise of 5 to 8 bits gives zstd ratios of about 2.0 down to 1.4.
    """
    pool = _pixel_pool()
    mask, offset = _lanes((1 << rng.choice((5, 6, 6, 7, 8))) - 1), _lanes(rng.randrange(200))
    img = pool[rng.randrange(len(pool))]
    while length > 0:
        k = rng.randrange(FRAME_SIDE) * FRAME_SIDE * 2  # a different "slice": rotate the rows
        noise = int.from_bytes(rng.randbytes(FRAME_BYTES), "little") & mask
        frame = (int.from_bytes(img[k:] + img[:k], "little") + noise + offset).to_bytes(FRAME_BYTES, "little")
        yield frame[:length] if length < FRAME_BYTES else frame
        length -= FRAME_BYTES


def _dcm_element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2s2xI", group, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _write_dcm(path: Path, rng: Random, pat: dict, mod: tuple, study: str, series: int, inst: int,
               size: int | None = None) -> int:
    """Write one DICOM-like file (preamble, "DICM", explicit-VR LE elements, OW pixel data); return its size."""
    name, sop, rows, cols, (flo, fhi), _, _ = mod
    frames = rng.randint(flo, fhi)
    if size is not None:  # fit a requested size: keep the columns, choose rows and frames
        frames = max(1, size // (rows * cols * 2))
        rows = max(1, size // (cols * 2 * frames))
    uid = f"1.2.826.0.1.3680043.9.7433.{pat['num']}.{study[-6:]}.{series}.{inst}".encode()
    meta = b"".join((_dcm_element(2, 1, b"OB", b"\0\1"), _dcm_element(2, 2, b"UI", sop.encode()),
                     _dcm_element(2, 3, b"UI", uid), _dcm_element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1"),
                     _dcm_element(2, 0x12, b"UI", b"1.2.826.0.1.3680043.9.7433.1")))
    body = [_dcm_element(8, 0x16, b"UI", sop.encode()), _dcm_element(8, 0x18, b"UI", uid),
            _dcm_element(8, 0x20, b"DA", study[2:10].encode()), _dcm_element(8, 0x60, b"CS", name.encode()),
            _dcm_element(0x10, 0x10, b"PN", f"{pat['last']}^{pat['first']}".encode()),
            _dcm_element(0x10, 0x20, b"LO", pat["mrn"].encode()),
            _dcm_element(0x10, 0x30, b"DA", pat["dob"].replace("-", "").encode()),
            _dcm_element(0x20, 0xD, b"UI", uid.rsplit(b".", 2)[0]), _dcm_element(0x20, 0xE, b"UI", uid.rsplit(b".", 1)[0]),
            _dcm_element(0x20, 0x13, b"IS", str(inst).encode()), _dcm_element(0x28, 8, b"IS", str(frames).encode()),
            _dcm_element(0x28, 0x10, b"US", struct.pack("<H", rows % 65536)),
            _dcm_element(0x28, 0x11, b"US", struct.pack("<H", cols)), _dcm_element(0x28, 0x100, b"US", b"\x10\0"),
            _dcm_element(0x28, 0x101, b"US", b"\x0c\0"), _dcm_element(0x28, 0x102, b"US", b"\x0b\0")]
    head = (b"\0" * 128 + b"DICM" + _dcm_element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta + b"".join(body))
    npix = rows * cols * 2 * frames
    if size is not None:
        npix = max(2, (size - len(head) - 12) & ~1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head + struct.pack("<HH2s2xI", 0x7FE0, 0x10, b"OW", npix))
        for piece in _pixels(rng, npix):
            f.write(piece)
    return len(head) + 12 + npix


# -- small documents ----------------------------------------------------------------------------------------


def _patient(rng: Random, num: int, site: str, mrn: str | None = None) -> dict:
    city, zipcode = rng.choice(CITIES)
    dob = TODAY - timedelta(days=rng.randrange(365, 95 * 365))
    return {"num": num, "site": site, "mrn": mrn or f"MRN{num:08d}", "last": rng.choice(LAST),
            "first": rng.choice(FIRST), "mi": chr(65 + rng.randrange(26)), "sex": rng.choice("MF"),
            "dob": dob.isoformat(), "street": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
            "city": city, "zip": zipcode, "phone": f"555-{rng.randrange(10000):04d}"}


def _stamp(rng: Random, days_back: int = 730) -> str:
    day = TODAY - timedelta(days=rng.randrange(days_back))
    return f"{day:%Y%m%d}{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"


def _lab_value(rng: Random, lab: tuple) -> tuple[int, str]:
    lo, hi = lab[3], lab[4]
    value = rng.randrange(lo * 7 // 10, hi * 13 // 10 + 1)
    return value, "L" if value < lo else "H" if value > hi else "N"


def _tenths(value: int) -> str:
    return f"{value // 10}.{value % 10}"


def _hl7(rng: Random, pat: dict, msg_num: int) -> bytes:
    """One HL7 v2.5.1 message: ADT^A01 (admission) or ORU^R01 (lab results), segments separated by CR."""
    ts, site, doc = _stamp(rng), pat["site"].upper(), rng.choice(DOCTORS)
    oru = rng.random() < 0.75
    segs = [f"MSH|^~\\&|{'LAB' if oru else 'ADT'}|{site}|EMR|{site}|{ts}||{'ORU^R01' if oru else 'ADT^A01'}"
            f"|MSG{msg_num:08d}|P|2.5.1",
            f"PID|1||{pat['mrn']}^^^{site}^MR||{pat['last']}^{pat['first']}^{pat['mi']}||"
            f"{pat['dob'].replace('-', '')}|{pat['sex']}|||{pat['street']}^^{pat['city']}^^{pat['zip']}||{pat['phone']}",
            f"PV1|1|{rng.choice('IOE')}|{rng.choice(DEPTS)}^{rng.randrange(100, 999)}^{rng.choice('AB')}||||{doc}"]
    if oru:
        order = f"ORD{rng.randrange(10**7):07d}"
        segs += [f"ORC|RE|{order}|F{order[3:]}", f"OBR|1|{order}|F{order[3:]}|24323-8^Metabolic panel^LN|||{ts}"
                 f"|||||||{ts}||{doc}||||||{ts}|||F"]
        for i, lab in enumerate(rng.sample(LABS, rng.randrange(3, len(LABS))), 1):
            value, flag = _lab_value(rng, lab)
            segs.append(f"OBX|{i}|NM|{lab[0]}^{lab[1]}^LN||{_tenths(value)}|{lab[2]}|"
                        f"{_tenths(lab[3])}-{_tenths(lab[4])}|{flag}|||F|||{ts}")
    else:
        segs.append(f"EVN|A01|{ts}")
        segs.append(f"DG1|1||I{rng.randrange(10, 99)}.{rng.randrange(10)}^Admitting diagnosis^I10||{ts}|A")
    return ("\r".join(segs) + "\r").encode()


def _fhir_patient(pat: dict) -> dict:
    return {"resourceType": "Patient", "id": pat["mrn"].lower(), "meta": {"versionId": "1"},
            "identifier": [{"system": f"urn:hospital:{pat['site']}:mrn", "value": pat["mrn"]}], "active": True,
            "name": [{"use": "official", "family": pat["last"], "given": [pat["first"], pat["mi"]]}],
            "telecom": [{"system": "phone", "value": pat["phone"], "use": "home"}],
            "gender": "male" if pat["sex"] == "M" else "female", "birthDate": pat["dob"],
            "address": [{"line": [pat["street"]], "city": pat["city"], "postalCode": pat["zip"]}]}


def _fhir_observation(rng: Random, pat: dict, num: int) -> dict:
    lab = rng.choice(LABS)
    value, flag = _lab_value(rng, lab)
    ts = _stamp(rng)
    return {"resourceType": "Observation", "id": f"obs-{pat['num']}-{num}", "meta": {"versionId": "1"},
            "status": "final", "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                         "observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": lab[0], "display": lab[1]}]},
            "subject": {"reference": f"Patient/{pat['mrn'].lower()}"},
            "effectiveDateTime": f"{ts[:4]}-{ts[4:6]}-{ts[6:8]}T{ts[8:10]}:{ts[10:12]}:{ts[12:]}Z",
            "valueQuantity": {"value": value / 10, "unit": lab[2], "system": "http://unitsofmeasure.org"},
            "interpretation": [{"coding": [{"code": flag}]}],
            "referenceRange": [{"low": {"value": lab[3] / 10}, "high": {"value": lab[4] / 10}}]}


def _json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def _pdf(rng: Random, pat: dict, image_bytes: int) -> bytes:
    """A one-page PDF-like report: text content stream plus an incompressible "JPEG" image stream."""
    lines = [f"Radiology report - {pat['last']}, {pat['first']} ({pat['mrn']})", f"DOB {pat['dob']}  "
             f"Study date {_stamp(rng)[:8]}  Referring {rng.choice(DOCTORS).split('^')[1]}"]
    lines += [f"{i}. {rng.choice(FINDINGS)}" for i in range(1, rng.randrange(15, 70))]
    text = "BT /F1 10 Tf 72 740 Td 12 TL\n" + "".join(f"({s}) Tj T*\n" for s in lines) + "ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font "
            b"<< /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode()),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Type /XObject /Subtype /Image /Width 1024 /Height 768 /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n" % image_bytes
            + b"\xff\xd8\xff\xe0" + rng.randbytes(image_bytes - 6) + b"\xff\xd9\nendstream"]
    out, offsets = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"], []
    pos = len(out[0])
    for i, obj in enumerate(objs, 1):
        offsets.append(pos)
        chunk = b"%d 0 obj\n%s\nendobj\n" % (i, obj)
        out.append(chunk)
        pos += len(chunk)
    xref = b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out.append(xref + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, pos))
    return b"".join(out)


# -- SQL dump and logs -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _pools() -> tuple[list[str], list[str], list[str]]:
    days = [(TODAY - timedelta(days=729 - i)).isoformat() for i in range(730)]
    dobs = [(TODAY - timedelta(days=365 + i * 7)).isoformat() for i in range(4800)]
    clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in (0, 17, 31, 48)]
    return days, dobs, clock


def _sql_rows(rng: Random, table: str, first_id: int, n: int, span: int, parents: tuple[int, int]) -> str:
    """``n`` INSERT lines for ``table`` with ids from ``first_id``; dates rise with the id over ``span`` rows.

    Columns are drawn in batches with ``choices(k=n)``: per-row draws would make the dump the slow part.
    """
    days, dobs, clock = _pools()
    ids = range(first_id, first_id + n)
    dayno = [min(729, i * 730 // max(1, span)) for i in ids]
    day = [days[d] for d in dayno]
    t = rng.choices(clock, k=n)
    if table == "patients":
        rows = zip(ids, rng.choices(LAST, k=n), rng.choices(FIRST, k=n), rng.choices(dobs, k=n), rng.choices("MF", k=n),
                   rng.choices(range(1, 9999), k=n), rng.choices(STREETS, k=n), rng.choices(CITIES, k=n),
                   rng.choices(range(10000), k=n))
        return "".join(f"INSERT INTO patients VALUES ({i},'MRN{i:08d}','{la}','{fi}','{dob}','{sx}','{no} {st}',"
                       f"'{ci[0]}','{ci[1]}','555-{ph:04d}');\n" for i, la, fi, dob, sx, no, st, ci, ph in rows)
    if table == "encounters":
        rows = zip(ids, rng.choices(range(1, parents[0] + 1), k=n), dayno, t, rng.choices(range(5), k=n),
                   rng.choices("IOEIO", k=n), rng.choices(DEPTS, k=n), rng.choices(range(100, 999), k=n),
                   rng.choices("DDDDA", k=n), rng.choices(range(5000, 4000000), k=n), rng.choices(clock, k=n))
        return "".join(f"INSERT INTO encounters VALUES ({i},{p},'{days[d]} {tm}','{days[min(729, d + los)]} {out}',"
                       f"{los},'{cl}','{dep}','W{w}','{st}',{c // 100}.{c % 100:02d});\n"
                       for i, p, d, tm, los, cl, dep, w, st, c, out in rows)
    labs = rng.choices(LABS, k=n)
    frac = rng.choices(range(1000), k=n)
    vals = [lab[3] * 7 // 10 + (lab[4] * 13 // 10 - lab[3] * 7 // 10) * f // 1000 for lab, f in zip(labs, frac)]
    rows = zip(ids, rng.choices(range(1, parents[1] + 1), k=n), rng.choices(range(1, parents[0] + 1), k=n),
               labs, vals, day, t, rng.choices("FFFFFFFP", k=n))
    return "".join(f"INSERT INTO lab_results VALUES ({i},{e},{p},'{lab[0]}','{lab[1]}',{v // 10}.{v % 10},"
                   f"'{lab[2]}','{'L' if v < lab[3] else 'H' if v > lab[4] else 'N'}','{st}','{d} {tm}');\n"
                   for i, e, p, lab, v, d, tm, st in rows)


SQL_SCHEMA = {
    "patients": "id bigint PRIMARY KEY, mrn varchar(16) UNIQUE NOT NULL, family text, given text, birth_date date, "
                "sex char(1), street text, city text, postal_code varchar(10), phone varchar(16)",
    "encounters": "id bigint PRIMARY KEY, patient_id bigint REFERENCES patients(id), admitted timestamp, "
                  "discharged timestamp, length_of_stay int, class char(1), department varchar(8), location text, "
                  "status char(1), charges numeric(12,2)",
    "lab_results": "id bigint PRIMARY KEY, encounter_id bigint REFERENCES encounters(id), patient_id bigint, "
                   "loinc varchar(16), name text, value numeric, unit text, flag char(1), status char(1), "
                   "resulted timestamp"}


def _write_sql(path: Path, rng: Random, budget: int) -> int:
    """Write the dump in batches until each table reaches its share of ``budget``; return the bytes written."""
    with open(path, "wb") as f:
        written = f.write(b"-- PostgreSQL database dump (replicator benchmark corpus)\nSET client_encoding = 'UTF8';\n"
                          b"SET standard_conforming_strings = on;\nBEGIN;\n\n")
        counts = [0, 0]
        for idx, (table, share) in enumerate(SQL_SHARES):
            written += f.write(f"-- Name: {table}; Type: TABLE\nCREATE TABLE {table} ({SQL_SCHEMA[table]});\n".encode())
            target, span, n = written + int(budget * share), max(1, int(budget * share) // 110), 0
            while written < target:
                batch = max(1, min(2000, (target - written) // 100))
                written += f.write(_sql_rows(rng, table, n + 1, batch, span, (counts[0], counts[1])).encode())
                n += batch
            if idx < 2:
                counts[idx] = n
        written += f.write(b"-- Indexes\nCREATE INDEX lab_results_patient ON lab_results (patient_id);\n"
                           b"CREATE INDEX encounters_patient ON encounters (patient_id);\nCOMMIT;\n")
    return written


def _log_lines(rng: Random, service: str, day: date, start_ms: int, budget: int) -> tuple[bytes, int]:
    """Timestamped lines for one service from ``start_ms`` after midnight until ``budget`` bytes."""
    out, size, ms = [], 0, start_ms
    while size < budget:
        ms += rng.randrange(1, 4000)
        s, milli = divmod(ms % 86_400_000, 1000)
        ts = f"{day}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{milli:03d}Z"
        level = rng.choice(("INFO",) * 30 + ("WARN", "WARN", "ERROR", "DEBUG"))
        mrn = f"MRN{rng.randrange(1, 99999):08d}"
        if service == "hl7-interface":
            msg = f"recv ORU^R01 MSG{rng.randrange(10**8):08d} from LAB@{rng.choice(SITES)} pid={mrn} ack=AA " \
                  f"latency_ms={rng.randrange(2, 900)}"
        elif service == "pacs-gateway":
            msg = f"C-STORE {rng.choice(('CT', 'MR', 'CR', 'US'))} from AE_MOD{rng.randrange(1, 40)} patient={mrn} " \
                  f"bytes={rng.randrange(2**18, 2**24)} status=0000"
        elif service == "emr-app":
            msg = f"user=u{rng.randrange(99999):05d} action={rng.choice(('view', 'edit', 'sign', 'print'))} " \
                  f"patient={mrn} dur_ms={rng.randrange(3, 2500)}"
        else:
            msg = f"event={rng.choice(('login', 'logout', 'chart-open', 'export'))} user=u{rng.randrange(99999):05d} " \
                  f"patient={mrn} ip=10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        line = f"{ts} {level:<5} [{service}] {msg}\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode(), ms


# -- generate -----------------------------------------------------------------------------------------------


def _pick_modality(rng: Random, big: bool) -> tuple:
    mods = MODALITIES + ((MG,) if big else ())
    return rng.choices(mods, weights=[m[6] for m in mods])[0]


def _write_study(root: Path, rng: Random, pdir: str, pat: dict, budget: int, big: bool) -> tuple[int, int]:
    """One imaging study under ``pdir/imaging``; returns (files, bytes), never more than ``budget`` bytes."""
    mod = _pick_modality(rng, big)
    study = f"ST{_stamp(rng)[:8]}-{rng.randrange(10**6):06d}"
    files = written = 0
    for series in range(1, rng.randint(1, 3) + 1):
        for inst in range(1, rng.randint(*mod[5]) + 1):
            left = budget - written
            if left < MIN_DCM:
                return files, written
            natural = mod[2] * mod[3] * 2 * mod[4][1]
            path = root / pdir / "imaging" / study / f"{series:03d}" / f"IM{inst:04d}.dcm"
            written += _write_dcm(path, rng, pat, mod, study, series, inst, left if natural > left else None)
            files += 1
    return files, written


def generate(root: str | Path, size: int, seed: int = 1, *, large_file_size: int | None = None) -> CorpusStats:
    """Create a hospital-like tree of about ``size`` bytes under ``root``.

    :param root: a directory that does not exist or is empty.
    :param size: approximate total bytes, not counting ``large_file_size`` (within a few percent above 1 MiB).
    :param seed: same seed and size give byte-identical trees.
    :param large_file_size: if given, also write one multi-frame imaging file of this many bytes (rounded
        down to even: pixels are 16-bit), written a frame at a time.
    :returns: the counts of the finished tree.
    :raises FileExistsError: ``root`` exists and is not empty.
    :raises ValueError: ``size`` is below 64 KiB.
    """
    root = Path(root)
    if size < 64 * 1024:
        raise ValueError(f"corpus size {size} is below 64 KiB")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    rng, big, written = Random(seed), size >= 512 * 2**20, 0

    made: set[Path] = set()  # membership only, never iterated (iteration order would not be deterministic)

    def put(rel: str, data: bytes) -> None:
        nonlocal written
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
        written += len(data)

    patients, msg_num = [], 0
    for num in range(1, max(3, int(size * SHARE_MSG) // 7500) + 1):
        pat = _patient(rng, num, SITES[num % len(SITES)])
        pdir = f"sites/{pat['site']}/patients/{pat['mrn']}"
        patients.append((pdir, pat))
        for _ in range(rng.randint(2, 10)):
            msg_num += 1
            put(f"{pdir}/hl7/{msg_num:08d}.hl7", _hl7(rng, pat, msg_num))
        put(f"{pdir}/fhir/Patient.json", _json(_fhir_patient(pat)))
        for obs in range(1, rng.randint(1, 5) + 1):
            put(f"{pdir}/fhir/Observation-{obs}.json", _json(_fhir_observation(rng, pat, obs)))
        if rng.random() < 0.1:
            (root / pdir / "scans-pending").mkdir()
    target = written + int(size * SHARE_DCM)
    while target - written >= MIN_DCM:
        pdir, pat = rng.choice(patients)
        written += _write_study(root, rng, pdir, pat, target - written, big)[1]
    target = written + int(size * SHARE_PDF)
    form = _pdf(rng, patients[0][1], 24 * 1024)
    put(f"sites/{SITES[0]}/forms/consent-template.pdf", form)
    (root / f"sites/{SITES[1]}/forms").mkdir(parents=True)
    os.link(root / f"sites/{SITES[0]}/forms/consent-template.pdf", root / f"sites/{SITES[1]}/forms/consent-template.pdf")
    written += len(form)  # a hard link's second name counts in scan(), so it counts against the budget
    while target - written > 8 * 1024:
        pdir, pat = rng.choice(patients)
        image = min(target - written, rng.randrange(20 * 1024, 600 * 1024))
        put(f"{pdir}/reports/{_stamp(rng)[:8]}-{rng.randrange(10**6):06d}.pdf", _pdf(rng, pat, image))
    log_budget = int(size * SHARE_LOG) // (len(LOG_SERVICES) * 3)
    for service in LOG_SERVICES:
        for back in (2, 1, 0):
            day = TODAY - timedelta(days=back)
            name = f"{service}.log" if back == 0 else f"{service}-{day:%Y%m%d}.log"
            put(f"logs/{name}", _log_lines(rng, service, day, 0, log_budget)[0])
    (root / "db").mkdir()
    written += _write_sql(root / "db" / "patients.sql", rng, max(16 * 1024, size - written - 1024))
    for empty in ["tmp", "quarantine"] + [f"sites/{s}/inbox" for s in SITES]:
        (root / empty).mkdir(parents=True, exist_ok=True)
    os.symlink("patients.sql", root / "db" / "current.sql")  # relative, stays valid wherever the tree goes
    if large_file_size:
        pdir, pat = patients[0]
        _write_dcm(root / pdir / "imaging" / "ST20240301-999999" / "001" / "MF0001.dcm", rng, pat, MODALITIES[3],
                   "ST20240301-999999", 1, 1, large_file_size)
    return scan(root)


SMALL_PER_PATIENT = 20  # files per patient directory of the many-small-files corpus


def generate_small(root: str | Path, files: int, seed: int = 11) -> CorpusStats:
    """Create a tree of ``files`` small files (an interface engine's archive): HL7 batches and FHIR documents.

    About 4.6 KB per file on average (1 to 14 HL7 messages a batch, one FHIR resource), so 200,000 files make
    about 0.93 GB: the "200k small files" corpus of issue 11.  Laid out like generate()'s patient directories
    (``sites/<site>/patients/<mrn>/{hl7,fhir}/``, SMALL_PER_PATIENT files each), so mutate() applies to it.

    :param root: a directory that does not exist or is empty.
    :param files: how many regular files to write (at least 1).
    :param seed: same seed and count give byte-identical trees.
    :returns: the counts of the finished tree.
    :raises FileExistsError: ``root`` exists and is not empty.
    :raises ValueError: ``files`` is below 1.
    """
    root = Path(root)
    if files < 1:
        raise ValueError(f"file count {files} is below 1")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    rng, msg_num, done, num = Random(seed), 0, 0, 0
    while done < files:
        num += 1
        pat = _patient(rng, num, SITES[num % len(SITES)])
        pdir = root / "sites" / pat["site"] / "patients" / pat["mrn"]
        (pdir / "hl7").mkdir(parents=True)
        (pdir / "fhir").mkdir()
        for i in range(min(SMALL_PER_PATIENT, files - done)):
            if i % 5 == 4:  # one file in five is a FHIR resource
                doc = _fhir_patient(pat) if i == 4 else _fhir_observation(rng, pat, i)
                (pdir / "fhir" / f"{doc['resourceType']}-{i}.json").write_bytes(_json(doc))
            else:
                batch = []
                for _ in range(rng.randint(1, 14)):
                    msg_num += 1
                    batch.append(_hl7(rng, pat, msg_num))
                (pdir / "hl7" / f"{msg_num:08d}.hl7").write_bytes(b"".join(batch))
            done += 1
    return scan(root)


def generate_large(path: str | Path, size: int, seed: int = 21) -> int:
    """Write one multi-frame imaging file of about ``size`` bytes at ``path`` (a frame at a time, never whole).

    :returns: its size in bytes.
    :raises FileExistsError: ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    rng = Random(seed)
    return _write_dcm(path, rng, _patient(rng, 1, SITES[0]), MODALITIES[3], "ST20240301-999999", 1, 1, size)


def scan(root: str | Path) -> CorpusStats:
    """Count an existing tree (symlinks are counted, never followed)."""
    stats = CorpusStats()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if dirpath != str(root):
            stats.dirs += 1
        if not dirnames and not filenames:
            stats.empty_dirs += 1
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.islink(os.path.join(dirpath, name)):
                stats.symlinks += 1
                continue
            kind = name.rsplit(".", 1)[-1] if "." in name else "other"
            stats.files += 1
            stats.bytes += st.st_size
            stats.hardlinks += st.st_nlink > 1
            stats.files_by_type[kind] = stats.files_by_type.get(kind, 0) + 1
            stats.bytes_by_type[kind] = stats.bytes_by_type.get(kind, 0) + st.st_size
    return stats


# -- mutate -------------------------------------------------------------------------------------------------


def _files(root: Path) -> list[str]:
    """Sorted relative paths of the regular files (symlinks excluded) under ``root``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if not os.path.islink(os.path.join(dirpath, name)):
                out.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return out


def _redigit(rng: Random, value: bytes) -> bytes:
    """Same-length replacement of every digit (a leading digit stays non-zero)."""
    out = bytearray(value)
    for i, c in enumerate(out):
        if 48 <= c <= 57:
            out[i] = 48 + rng.randrange(1 if i == 0 else 0, 10)
    return bytes(out)


def _edit_row(rng: Random, line: bytes) -> bytes:
    """An in-place UPDATE: the row keeps its length, so nothing after it shifts."""
    head, sep, rest = line.partition(b"(")
    fields = rest.split(b",")
    if head.startswith(b"INSERT INTO lab_results"):
        fields[5], fields[7], fields[8] = _redigit(rng, fields[5]), rng.choice((b"'N'", b"'H'", b"'L'")), b"'F'"
    else:
        fields[8], fields[9] = b"'D'", _redigit(rng, fields[9])
    return head + sep + b",".join(fields)


def _mutate_sql(path: Path, rng: Random, rate: float, stats: MutationStats) -> None:
    """Stream the dump into a temp file: change rows in clusters, insert new rows at each table's end, replace.

    Patients rows are never edited, so everything before the first insertion (the end of the patients table)
    is unchanged. Memory stays at one line plus one batch of new rows.
    """
    size = path.stat().st_size
    clusters = max(1, round(rate * 60))
    per_cluster = max(3, int(size // 110 * rate * 0.05) // clusters)
    starts = sorted(rng.randrange(size) for _ in range(clusters))
    tmp = path.with_name(path.name + ".mutate-tmp")
    table, count, last, last_ids, pos, out, edit_left = None, 0, b"", {"patients": 0, "encounters": 0}, 0, 0, 0
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            if line.startswith(b"INSERT INTO "):
                count, last = count + 1, line
                while starts and pos >= starts[0]:
                    starts.pop(0)
                    edit_left += per_cluster
                if edit_left and table != "patients":
                    line, edit_left = _edit_row(rng, line), edit_left - 1
                    stats.edited_rows += 1
            elif table and line.startswith((b"-- Name: ", b"-- Indexes")):
                last_id = int(last.partition(b"(")[2].partition(b",")[0]) if count else 0
                last_ids[table] = last_id
                n = max(1, round(count * rate * 0.2))
                if stats.sql_insert_offset < 0:
                    stats.sql_insert_offset = out
                parents = (last_ids["patients"], max(1, last_ids["encounters"]))
                for first in range(last_id + 1, last_id + n + 1, 2000):
                    out += dst.write(_sql_rows(rng, table, first, min(2000, last_id + n + 1 - first), first,
                                               parents).encode())
                stats.inserted_rows += n
                table, count = None, 0
            if line.startswith(b"-- Name: "):
                table = line[9:].partition(b";")[0].decode()
            pos += len(line)
            out += dst.write(line)
    os.replace(tmp, path)


def _edit_small(rng: Random, path: Path) -> None:
    data = path.read_bytes()
    if path.suffix == ".hl7":  # a corrected result: new value, status C, and a note
        segs = data.split(b"\r")
        obx = [i for i, s in enumerate(segs) if s.startswith(b"OBX|")] or [len(segs) - 2]
        idx = rng.choice(obx)
        fields = segs[idx].split(b"|")
        if len(fields) > 11:
            fields[5], fields[11] = _redigit(rng, fields[5]), b"C"
            segs[idx] = b"|".join(fields)
        segs.insert(len(segs) - 1, b"NTE|1||Corrected result, verified by " + rng.choice(DOCTORS).encode())
        path.write_bytes(b"\r".join(segs))
        return
    doc = json.loads(data)
    doc["meta"]["versionId"] = str(int(doc["meta"]["versionId"]) + 1)
    if doc["resourceType"] == "Observation":
        doc["status"] = "amended"
        doc["valueQuantity"]["value"] = rng.randrange(1, 5000) / 10
    else:
        doc["telecom"][0]["value"] = f"555-{rng.randrange(10000):04d}"
        doc["address"][0]["line"] = [f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}"]
    path.write_bytes(_json(doc))


def mutate(root: str | Path, rate: float = 0.05, seed: int = 2) -> MutationStats:
    """Apply one seeded "next day" to a tree made by ``generate()``.

    :param root: the corpus root.
    :param rate: how much changes: about this fraction of small files edited, ``rate / 5`` deleted and as many
        new HL7 messages, new studies of ``rate / 2`` of the imaging bytes, the SQL dump grows by ``rate / 5`` of
        its rows (and about ``rate / 20`` are changed in place, in clusters), and today's logs by ``4 * rate``.
    :param seed: same seed and same starting tree give the same result.
    :returns: what changed.
    :raises ValueError: ``rate`` is not in (0, 1].
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate {rate} is not in (0, 1]")
    root, rng, stats = Path(root), Random(seed), MutationStats()
    files = _files(root)
    small = [f for f in files if "/patients/" in f and f.endswith((".hl7", ".json"))]
    pdirs = sorted({f.split("/patients/")[0] + "/patients/" + f.split("/patients/")[1].split("/")[0]
                    for f in files if "/patients/" in f})
    total = sum((root / f).stat().st_size for f in files)
    n_edit, n_del = max(1, round(len(small) * rate)), max(1, round(len(small) * rate * 0.2))
    picks = rng.sample(small, min(len(small), n_edit + n_del))
    for rel in picks[:n_edit]:
        _edit_small(rng, root / rel)
        stats.edited += 1
    doomed = picks[n_edit:]
    pdfs = [f for f in files if "/reports/" in f]
    if pdfs:
        doomed.append(rng.choice(pdfs))
    for rel in doomed:
        (root / rel).unlink()
        stats.deleted += 1
    for service in LOG_SERVICES:  # today's logs grow; the rotated ones (service-YYYYMMDD.log) never change
        path = root / "logs" / f"{service}.log"
        if path.is_file():
            grow = max(2048, int(path.stat().st_size * rate * 4))
            with open(path, "ab") as f:
                f.write(_log_lines(rng, service, TODAY + timedelta(days=1), 0, grow)[0])
        stats.appended += 1
    if (root / "db" / "patients.sql").is_file():
        _mutate_sql(root / "db" / "patients.sql", rng, rate, stats)
    num = 1 + len(pdirs)
    for _ in range(n_del):  # new messages arrive for existing patients
        pdir = rng.choice(pdirs)
        pat = _patient(rng, num, pdir.split("/")[1], pdir.rsplit("/", 1)[1])
        msg = 90_000_000 + rng.randrange(10**7)
        (root / pdir / "hl7").mkdir(parents=True, exist_ok=True)
        (root / pdir / "hl7" / f"{msg:08d}.hl7").write_bytes(_hl7(rng, pat, msg))
        stats.new_files += 1
    dcm = sum((root / f).stat().st_size for f in files if f.endswith(".dcm"))
    budget, added = max(MIN_DCM, int(dcm * rate * 0.5)), 0
    while budget - added >= MIN_DCM:
        pdir = rng.choice(pdirs)
        pat = _patient(rng, num, pdir.split("/")[1], pdir.rsplit("/", 1)[1])
        n, nbytes = _write_study(root, rng, pdir, pat, budget - added, total >= 512 * 2**20)
        stats.new_files, added = stats.new_files + n, added + nbytes
    if pdirs:
        old = rng.choice(pdirs)
        new = old + "-merged"
        while (root / new).exists():
            new += "x"
        os.rename(root / old, root / new)
        stats.renamed_dirs += 1
    return stats


# -- command line -------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"1.5G"``, ``"4096"`` -> bytes (K/M/G/T and KiB/MiB/GiB/TiB are all powers of 1024).

    :raises ValueError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corpus.py", description="Deterministic hospital-like benchmark corpus.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="create a corpus tree")
    gen.add_argument("dir")
    gen.add_argument("--size", type=parse_size, required=True, help="total size, e.g. 64MiB or 1G")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--large", type=parse_size, default=None, help="also write one file of this size")
    mut = sub.add_parser("mutate", help='apply one "next day" of changes')
    mut.add_argument("dir")
    mut.add_argument("--rate", type=float, default=0.05)
    mut.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            print(generate(args.dir, args.size, args.seed, large_file_size=args.large).summary())
        else:
            print(mutate(args.dir, args.rate, args.seed).summary())
    except (OSError, ValueError) as exc:
        print(f"corpus.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
