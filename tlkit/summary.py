"""Per-layer model summary (torchinfo) with a receptive-field column, as in the lecture's tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from tlkit.receptive_field import receptive_fields


@dataclass
class Row:
    name: str  # qualified module name, "" for the model itself
    label: str  # torchinfo style "Conv2d: 2-1"
    depth: int
    output_shape: list[int]
    params: int | None  # None: counted in the children rows
    mult_adds: int
    receptive_field: str  # "size / jump", "global" or ""


@dataclass
class Summary:
    rows: list[Row]
    total_params: int
    trainable_params: int
    total_mult_adds: int
    input_size: list[int]
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """The summary as a plain-text table."""
        header = ("Layer (type:depth-idx)", "Output Shape", "Param #", "Mult-Adds", "RF size / jump")
        body = []
        for row in self.rows:
            indent = "" if row.depth == 0 else "│    " * (row.depth - 1) + "├─"
            body.append((indent + row.label, str(row.output_shape),
                         "--" if row.params is None else f"{row.params:,}",
                         "--" if not row.mult_adds else f"{row.mult_adds:,}", row.receptive_field))
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        line = "=" * (sum(widths) + 3 * (len(widths) - 1))

        def fmt(cells):
            return "   ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        lines = [line, fmt(header), line, *(fmt(r) for r in body), line,
                 f"Total params: {self.total_params:,}",
                 f"Trainable params: {self.trainable_params:,}",
                 f"Non-trainable params: {self.total_params - self.trainable_params:,}",
                 f"Total mult-adds (M): {self.total_mult_adds / 1e6:.2f}",
                 f"Input size: {self.input_size}", line,
                 "RF: receptive field of one output unit in input pixels / distance between units."]
        return "\n".join(lines)


def summarize(model: nn.Module, image_size: int, *, depth: int = 3) -> Summary:
    """Summarise ``model`` on one ``3 x image_size x image_size`` image, down to ``depth`` levels."""
    import torchinfo

    names = {id(module): name for name, module in model.named_modules()}
    fields = receptive_fields(model, image_size)
    # Trace every level (so mult-adds of deep leaves add up), show only `depth` levels.
    stats = torchinfo.summary(model, input_size=(1, 3, image_size, image_size), depth=64,
                              col_names=("output_size", "num_params", "mult_adds"), verbose=0,
                              device="cpu")
    # torchinfo counts mult-adds on leaf layers only: add them up for the rows at the depth cut-off.
    subtree_macs: dict[int, int] = {}
    last_shape: dict[int, list[int]] = {}
    for info in stats.summary_list:  # keyed by module: torchinfo copies parent LayerInfos
        node = info
        while node is not None:
            if info.is_leaf_layer:
                subtree_macs[node.layer_id] = subtree_macs.get(node.layer_id, 0) + int(info.macs)
            if info.output_size:
                last_shape[node.layer_id] = list(info.output_size)
            node = node.parent_info
    rows = []
    for info in stats.summary_list:
        if info.depth > depth:
            continue
        name = names.get(info.layer_id, info.var_name)
        shown_whole = info.is_leaf_layer or info.depth == depth
        params = info.num_params if shown_whole else (info.leftover_params() or None)
        label = info.class_name if info.depth == 0 else f"{info.class_name}: {info.depth}-{info.depth_index}"
        rows.append(Row(name=name, label=label, depth=info.depth,
                        # a module run through another method than forward (timm's
                        # forward_features) has no output of its own: show its last layer's
                        output_shape=list(info.output_size) or last_shape.get(info.layer_id, []),
                        params=params, mult_adds=subtree_macs.get(info.layer_id, 0) if shown_whole else 0,
                        receptive_field=_field_label(fields, name, whole_block=shown_whole)))
    return Summary(rows=rows, total_params=int(stats.total_params),
                   trainable_params=int(stats.trainable_params),
                   total_mult_adds=int(stats.total_mult_adds), input_size=[1, 3, image_size, image_size])


def _field_label(fields: dict, name: str, *, whole_block: bool) -> str:
    """The layer's own field, or for a block shown as one row, the largest field inside it."""
    if name in fields:
        return fields[name].label()
    if whole_block and name:
        inside = [f for n, f in fields.items() if n.startswith(name + ".") and not f.is_global]
        if inside:
            return max(inside, key=lambda f: f.size).label()
    return ""
