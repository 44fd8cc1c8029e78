"""Project an MEC model's bytes to a dataset's full-scale vocabulary.

Why: at reduced scale (a few million synthetic rows) the tables are small, so the dense
network dominates the model and the whole-model ratio says nothing about real Criteo. The
AUC has to be measured on the data we can afford; the bytes can be counted exactly for the
real vocabulary, with the same field selection rule and byte layout as ``ctrzip.compression.mec.method``
and the dense network measured on the trained model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ctrzip.compression.mec.fields import dense_reason
from ctrzip.nn.embedding.pq import Layout, packed_code_bytes, pq_float_bytes, pq_table_bytes

# Criteo, min_count 10 on an 80% training split (shared/spec/DATA.md); I-fields bucketed by floor(ln(v)^2).
CRITEO_C = [1446, 554, 157339, 117822, 306, 18, 11882, 630, 5, 39530, 5131, 156656, 3176, 28, 11043,
            148913, 12, 4560, 2003, 5, 154564, 18, 17, 53031, 82, 40955]  # fmt: skip
CRITEO_I = [48, 98, 120, 54, 225, 150, 97, 75, 106, 10, 36, 62, 84]

# Avazu, min_count 2 on an 80% split (DATA.md: device_id ~820k, device_ip ~2.9M; the rest at raw counts).
_AVAZU = {"hour_of_day": 24, "weekday": 7, "C1": 7, "banner_pos": 7, "site_id": 4737, "site_domain": 7745,
          "site_category": 26, "app_id": 8552, "app_domain": 559, "app_category": 36, "device_id": 820_000,
          "device_ip": 2_900_000, "device_model": 8251, "device_type": 5, "device_conn_type": 4,
          "C14": 2626, "C15": 8, "C16": 9, "C17": 435, "C18": 4, "C19": 68, "C20": 172,
          "C21": 60}  # fmt: skip

# Criteo with no frequency filter: every distinct raw value of C1..C26 keeps its own row (DATA.md).
CRITEO_C_RAW = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]  # fmt: skip

FULL_SCALE_VOCAB: dict[str, dict[str, int]] = {
    "criteo": {
        **{f"I{i + 1}": v for i, v in enumerate(CRITEO_I)},
        **{f"C{i + 1}": v for i, v in enumerate(CRITEO_C)},
    },
    "criteo_raw": {
        **{f"I{i + 1}": v for i, v in enumerate(CRITEO_I)},
        **{f"C{i + 1}": v + 2 for i, v in enumerate(CRITEO_C_RAW)},
    },
    "avazu": {k: v + 2 for k, v in _AVAZU.items()},  # + padding and OOV rows
}


def project_mec_bytes(
    vocab: Mapping[str, int],
    *,
    dim: int,
    num_subspaces: int,
    codebook_size: int,
    min_vocab: int,
    network_bytes: int,
    first_order: bool,
    layout: Layout = "additive",
) -> dict[str, Any]:
    """Dense and MEC bytes of a model over ``vocab`` (field -> rows incl. padding/OOV).

    Fields are chosen by ``mec.dense_reason``, the rule ``mec.select_fields`` applies (with the
    first-order table on the same codes counted when ``first_order``).
    ``network_bytes`` is everything outside the tables (the MLP, cross layers, BatchNorm
    statistics ...), which does not depend on the vocabulary. ``mec_bytes`` counts codes as
    stored (``sizes.stored_bytes`` of such a model); ``mec_bytes_packed`` and ``ratio_packed``
    are a further projection with bit-packed codes.
    """
    m, k = num_subspaces, codebook_size
    if dim % m:
        raise ValueError(f"dim {dim} is not divisible by M={m}")
    # a first-order table on the codes reads the same codes: only its floats (dim 1, additive)
    lr_pq = pq_float_bytes(1, m, k, "additive") if first_order else 0
    dense = mec = mec_packed = network_bytes
    quantized = []
    for name, v in vocab.items():
        table, lr = v * dim * 4, (v * 4 if first_order else 0)
        dense += table + lr
        if dense_reason(v, dim, m, k, layout, min_vocab, first_order) is None:
            quantized.append(name)
            mec += pq_table_bytes(v, dim, m, k, layout) + lr_pq
            mec_packed += packed_code_bytes(v, m, k) + pq_float_bytes(dim, m, k, layout) + lr_pq
        else:
            mec += table + lr
            mec_packed += table + lr
    max_ids = max((vocab[f] for f in quantized), default=0)
    return {
        "dense_bytes": dense,
        "mec_bytes": mec,
        "mec_bytes_packed": mec_packed,
        "ratio": dense / mec,
        "ratio_packed": dense / mec_packed,
        "quantized_fields": len(quantized),
        "max_ids_per_codeword": max_ids / k,
        "bits_per_code": max(1, math.ceil(math.log2(k))),
    }
