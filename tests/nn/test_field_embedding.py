import torch

from ctrzip.nn.embedding import DenseTable, FieldEmbedding


def test_shapes_and_sequence_mean_pooling(tiny_schema, tiny_batch):
    fe = FieldEmbedding(tiny_schema, 8, init_std=1.0)
    out = fe(tiny_batch)
    assert out.shape == (len(tiny_batch), tiny_schema.num_fields, 8)
    assert fe(tiny_batch, flatten=True).shape == (len(tiny_batch), tiny_schema.num_fields * 8)
    # independent computation of the sequence field's mean over non-padding ids
    sl = tiny_schema.sparse_slices()["tags"]
    ids = tiny_batch.sparse[:, sl].long()
    w = fe.tables["tags"].weight.detach()
    expect = []
    for row in ids:
        nz = row[row != 0]
        expect.append(w[nz].mean(0) if len(nz) else torch.zeros(8))
    idx = tiny_schema.names.index("tags")
    torch.testing.assert_close(out[:, idx].detach(), torch.stack(expect))
    # dense field is value * vector
    didx = tiny_schema.names.index("price")
    torch.testing.assert_close(
        out[:, didx].detach(), tiny_batch.dense[:, :1] * fe.dense_embeds["price"].weight.detach()
    )


def test_padding_row_is_zero_and_table_swap(tiny_schema, tiny_batch):
    fe = FieldEmbedding(tiny_schema, 4)
    assert torch.all(fe.tables["user"].weight[0] == 0)
    new = DenseTable.from_tensor(torch.ones(50, 4))
    fe.tables["user"] = new
    out = fe(tiny_batch)
    torch.testing.assert_close(out[:, 0], torch.ones(len(tiny_batch), 4))
    assert fe.nbytes() == sum(t.nbytes() for t in fe.tables.values()) + 4 * 4
