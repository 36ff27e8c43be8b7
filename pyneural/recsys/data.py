"""Rating data: MovieLens readers, a synthetic generator with ML-25M's shape, and the train/test split.

A ``Ratings`` holds parallel arrays ``users`` and ``items`` (int32, dense ids 0..n-1) and
``ratings`` (float32), plus ``n_users``/``n_items``, and for synthetic data ``truth`` (float32):
the best possible prediction, the expected stored rating given the true score (noise, half-step
rounding and clipping taken into account exactly), whose RMSE against the ratings is the noise
floor that no model can beat on average. int32/float32 keep 25M ratings at 300 MB.
``Ratings.to("cuda")`` copies the columns to the CUDA device once, the ids widened to the int64 the
embedding kernels take (a training step then slices batches there, with no host transfer).

Readers (``read_ratings`` picks by file name, or by content for other names):
  ``u.data``      ml-100k: ``user<TAB>item<TAB>rating<TAB>timestamp``
  ``ratings.dat`` ml-1m / ml-10m: ``user::item::rating::timestamp``
  ``ratings.csv`` ml-latest / ml-20m / ml-25m: header ``userId,movieId,rating,timestamp``
Lines are parsed in bulk with numpy; a malformed line (wrong field count, a non-number, a negative
or fractional id, a non-finite rating) raises ``ValueError`` naming the file, the line number and
the line. Raw ids are remapped to 0..n-1 in ascending order of raw id.

Synthetic data (``synthetic``): users and items drawn independently per rating from shifted power
laws (inverse CDF in closed form, so no sampling tables; ids permuted so popularity does not follow
the id), scores ``mu + b_u + b_i + <p_u, q_i>`` from a rank-8 truth, plus Gaussian noise, clipped to
0.5..5 and rounded to half stars. At 25M ratings: 162,541 users and 59,047 items (ML-25M); fewer
ratings scale the users linearly and the items as N^0.85 (which lands on ML-1M's shape at 1M).
Because the draws are independent, the ratings come already in random order. Pairs may repeat
(a user re-rating an item); the generator does not deduplicate (a sort of 25M pairs would cost more
than the rest together). Every step is vectorised; the scores come from the fused embedding-dot
kernel in chunks, so the peak stays near the 4 output arrays.
"""
import os
import re

import numpy as np

ML25M_USERS, ML25M_ITEMS, ML25M_RATINGS = 162_541, 59_047, 25_000_000
RATING_MIN, RATING_MAX = 0.5, 5.0


class Ratings:
    """Parallel arrays of (user, item, rating) with dense ids; see the module docstring."""

    def __init__(self, users, items, ratings, n_users, n_items, truth=None):
        self.users, self.items, self.ratings = users, items, ratings
        self.n_users, self.n_items, self.truth = int(n_users), int(n_items), truth

    def __len__(self):
        return int(self.ratings.shape[0])

    @property
    def device(self):
        from pyneural import backend
        return backend.device_of(self.ratings)

    def to(self, device):
        """These ratings on ``device`` (``"cpu"``, ``"cuda"``): ``self`` when they are already there. On
        the CUDA device the ids are int64 (8 bytes a rating each; the host keeps int32)."""
        from pyneural import backend
        device = backend.device(device)
        if self.device == device:
            return self
        if device.type == "cpu":
            users, items = (backend.to_device(a, device).astype(np.int32) for a in (self.users, self.items))
        else:
            users, items = (backend.to_device(a.astype(np.int64), device) for a in (self.users, self.items))
        ratings, truth = (None if a is None else backend.to_device(a, device) for a in (self.ratings, self.truth))
        return Ratings(users, items, ratings, self.n_users, self.n_items, truth)

    def subset(self, index):
        """The ratings at ``index`` (a slice, a mask or positions), same id spaces."""
        truth = None if self.truth is None else self.truth[index]
        return Ratings(self.users[index], self.items[index], self.ratings[index], self.n_users, self.n_items, truth)

    def noise_floor(self):
        """RMSE of the best possible prediction against the ratings (synthetic data only, else None)."""
        if self.truth is None:
            return None
        return rmse(self.truth, self.ratings)

    def __repr__(self):
        return f"Ratings({len(self)} ratings, {self.n_users} users, {self.n_items} items)"


def rmse(pred, target, chunk=1 << 22):
    """Root-mean-square error in float64, in chunks (no full-size float64 temporaries), on the arrays'
    device (one scalar read back per chunk)."""
    from pyneural import backend
    xp = backend.xp(target)
    total = 0.0
    for s in range(0, len(target), chunk):
        d = pred[s:s + chunk].astype(np.float64) - target[s:s + chunk]
        total += float(xp.dot(d, d))
    return float(np.sqrt(total / max(len(target), 1)))


def train_test_split(data, test_fraction=0.1, seed=0, shuffled=False):
    """(train, test) by a seeded random permutation; ``shuffled=True`` says the ratings are already
    in random order (synthetic data), so the first 1 - test_fraction are taken as they are."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"train_test_split: test_fraction must lie in (0, 1), got {test_fraction}")
    n = len(data)
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise ValueError(f"train_test_split: {n} ratings are too few to split")
    if shuffled:
        return data.subset(slice(0, n - n_test)), data.subset(slice(n - n_test, n))
    order = np.random.default_rng(seed).permutation(n)
    return data.subset(np.sort(order[n_test:])), data.subset(np.sort(order[:n_test]))


# ---- readers ------------------------------------------------------------------------------------

FORMATS = {"u.data": "\t", "ratings.dat": "::", "ratings.csv": ","}
HEADER = re.compile(r"userId,movieId,rating(,timestamp)?")
CHUNK_BYTES = 1 << 26


def _detect_format(path, first_line):
    name = os.path.basename(path)
    if name in FORMATS:
        return FORMATS[name]
    for sep in ("::", "\t", ","):
        if sep in first_line:
            return sep
    raise ValueError(f"{path}: cannot tell the format from the name or the first line {first_line!r}; "
                     f"expected u.data (tab separated), ratings.dat (::) or ratings.csv (with header)")


def _first_bad_line(lines, sep, width):
    """(index, why) of the first line that is not ``width`` numeric fields with integer ids."""
    for k, line in enumerate(lines):
        fields = line.split(sep)
        if len(fields) != width:
            return k, f"{len(fields)} fields, expected {width}"
        try:
            values = [float(f) for f in fields]
        except ValueError:
            return k, "a field is not a number"
        if not all(v >= 0 and v == int(v) for v in values[:2]):
            return k, "user and item ids must be non-negative integers"
        if not np.isfinite(values[2]):
            return k, "the rating is not finite"
    return None


def _parse_chunk(path, text, sep, first_number, width):
    """Columns (users, items int64; ratings float32) of the complete lines in ``text``."""
    lines = text.split("\n")
    n = len(lines)
    flat = None
    if text.count(sep) == n * (width - 1):
        import warnings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns or raises at text it cannot parse
                flat = np.fromstring(text.replace(sep, " "), dtype=np.float64, sep=" ")
        except ValueError:
            flat = np.empty(0)
        if flat.size == n * width:
            flat = flat.reshape(n, width)
            ids = flat[:, :2]
            if not (np.all(ids >= 0) and np.all(ids == np.floor(ids)) and np.all(np.isfinite(flat[:, 2]))):
                flat = None
        else:
            flat = None
    if flat is None:
        bad = _first_bad_line(lines, sep, width)
        k, why = bad if bad is not None else (0, "cannot be parsed")
        raise ValueError(f"{path}:{first_number + k}: malformed line {lines[k]!r} ({why}; expected "
                         f"user{sep}item{sep}rating{sep}timestamp)")
    return flat[:, 0].astype(np.int64), flat[:, 1].astype(np.int64), flat[:, 2].astype(np.float32)


def _dense_ids(raw):
    """(ids 0..n-1 as int32, n): raw ids ranked in ascending order."""
    uniq, inverse = np.unique(raw, return_inverse=True)
    return inverse.astype(np.int32), int(uniq.size)


def read_ratings(path):
    """Read a MovieLens ratings file (u.data, ratings.dat or ratings.csv) into ``Ratings``. Read and
    parsed in chunks of 64 MiB of text (numpy's text parser), so ml-25m needs no per-line Python."""
    path = os.fspath(path)
    columns = ([], [], [])
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first_line = f.readline()
        if not first_line.strip():
            raise ValueError(f"{path}: the file is empty or starts with a blank line")
        sep = _detect_format(path, first_line)
        number = 1
        pending = first_line
        if sep == "," and not first_line.strip()[:1].isdigit():
            if not HEADER.fullmatch(first_line.strip()):
                raise ValueError(f"{path}:1: unexpected header {first_line.strip()!r}; expected "
                                 f"'userId,movieId,rating,timestamp'")
            pending, number = "", 2
        width = None
        while True:
            block = f.read(CHUNK_BYTES)
            text = (pending + block).replace("\r\n", "\n")
            pending = ""
            if block:
                cut = text.rfind("\n") + 1
                text, pending = text[:cut], text[cut:]
            body = text.rstrip("\n")
            if block:  # blank lines at the end of a chunk: an error only if more data follows
                pending = text[len(body) + 1:] + pending
            if body:
                if width is None:
                    line = body.split("\n", 1)[0]
                    width = line.count(sep) + 1
                    if width not in (3, 4):
                        raise ValueError(f"{path}:{number}: malformed line {line!r} ({width} fields; expected "
                                         f"user{sep}item{sep}rating{sep}timestamp)")
                for col, part in zip(columns, _parse_chunk(path, body, sep, number, width)):
                    col.append(part)
                number += body.count("\n") + 1
            if not block:
                break
    if not columns[0]:
        raise ValueError(f"{path}: no ratings in the file")
    users, items, ratings = (np.concatenate(c) for c in columns)
    u, n_users = _dense_ids(users)
    del users
    i, n_items = _dense_ids(items)
    return Ratings(u, i, ratings, n_users, n_items)


# ---- synthetic ----------------------------------------------------------------------------------

def synthetic_shape(n_ratings):
    """(n_users, n_items) for ``n_ratings``: ML-25M's at 25M, users linear and items as N^0.85 below."""
    scale = n_ratings / ML25M_RATINGS
    return max(2, int(round(ML25M_USERS * scale))), max(2, int(round(ML25M_ITEMS * scale ** 0.85)))


def _power_law_ids(rng, n_draws, n_ids, shift, exponent, chunk):
    """``n_draws`` int32 ids in [0, n_ids) with P(rank r) ~ (r + shift)^-exponent (continuous inverse
    CDF, floored), ranks mapped to ids by a random permutation."""
    a = 1.0 - exponent  # CDF of the density (x + shift)^-exponent on [0, n): ((x+shift)^a - shift^a) / norm
    lo, hi = shift ** a, (n_ids + shift) ** a
    rank_to_id = rng.permutation(n_ids).astype(np.int32)
    out = np.empty(n_draws, dtype=np.int32)
    for s in range(0, n_draws, chunk):
        u = rng.random(min(chunk, n_draws - s), dtype=np.float32)
        x = np.power(lo + u * np.float32(hi - lo), np.float32(1.0 / a)) - np.float32(shift)
        r = x.astype(np.int32)
        np.clip(r, 0, n_ids - 1, out=r)
        out[s:s + r.size] = rank_to_id[r]
    return out


def expected_rating_table(noise, lo=RATING_MIN - 4.0, hi=RATING_MAX + 4.0, points=8193):
    """(scores, E[rating | score]) on a grid: the mean of clip(round_half(score + N(0, noise^2))), the
    best predictor under squared error. Each stored value v has probability
    Phi((v + 1/4 - score) / noise) - Phi((v - 1/4 - score) / noise), the end values take the tails."""
    import math
    scores = np.linspace(lo, hi, points)
    values = np.arange(RATING_MIN, RATING_MAX + 0.25, 0.5)
    edges = np.concatenate([[-np.inf], values[:-1] + 0.25, [np.inf]])
    z = (edges[None, :] - scores[:, None]) / noise
    cdf = 0.5 * (1.0 + np.frompyfunc(math.erf, 1, 1)(z / math.sqrt(2.0)).astype(np.float64))
    return scores, np.diff(cdf, axis=1) @ values


def synthetic(n_ratings=ML25M_RATINGS, n_users=None, n_items=None, rank=8, noise=0.6, seed=0, chunk=1 << 21):
    """Seeded synthetic ratings with ML-25M's shape (see the module docstring); ``truth`` is set."""
    from pyneural.kernels import embedding as _emb_kernels

    n_ratings = int(n_ratings)
    if n_ratings < 2:
        raise ValueError(f"synthetic: n_ratings must be >= 2, got {n_ratings}")
    du, di = synthetic_shape(n_ratings)
    n_users, n_items = int(n_users or du), int(n_items or di)
    rng = np.random.default_rng(seed)
    users = _power_law_ids(rng, n_ratings, n_users, shift=0.2 * n_users, exponent=2.0, chunk=chunk)
    items = _power_law_ids(rng, n_ratings, n_items, shift=0.002 * n_items + 10, exponent=1.3, chunk=chunk)
    scale = np.sqrt(0.6 / np.sqrt(rank))  # <p, q> has std 0.6
    p = (rng.standard_normal((n_users, rank), dtype=np.float32) * scale).astype(np.float32)
    q = (rng.standard_normal((n_items, rank), dtype=np.float32) * scale).astype(np.float32)
    bu = (rng.standard_normal(n_users, dtype=np.float32) * np.float32(0.3))
    bi = (rng.standard_normal(n_items, dtype=np.float32) * np.float32(0.4))
    grid, expected = expected_rating_table(noise)
    truth = np.empty(n_ratings, dtype=np.float32)
    ratings = np.empty(n_ratings, dtype=np.float32)
    for s in range(0, n_ratings, chunk):
        e = min(s + chunk, n_ratings)
        score = _emb_kernels.embedding_dot_forward(p, users[s:e].astype(np.int64), q, items[s:e].astype(np.int64),
                                                   bu, bi, 3.5)
        truth[s:e] = np.interp(score, grid, expected)
        r = rng.standard_normal(e - s, dtype=np.float32)
        r *= np.float32(noise)
        r += score
        r *= 2
        np.rint(r, out=r)
        r *= np.float32(0.5)
        np.clip(r, RATING_MIN, RATING_MAX, out=ratings[s:e])
    return Ratings(users, items, ratings, n_users, n_items, truth)
