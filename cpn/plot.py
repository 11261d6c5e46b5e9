"""Draw a CPN's DAG (layered: context, target, latent, leaves, derived leaves) with networkx + matplotlib.

``docs/cpn_network.png`` is made with
``python -c "from cpn.plot import save_network_png; save_network_png('docs/cpn_network.png')"``.

Nothing here chooses matplotlib's backend: :func:`save_network_png` draws on a bare
``Figure`` (no pyplot), and :func:`draw_network` uses pyplot only when it is given no axes.

Examples
--------
>>> from matplotlib.figure import Figure
>>> from cpn.structure import load_network
>>> ax = draw_network(load_network("physionet"), ax=Figure().subplots())
>>> len(ax.texts) > 40
True
"""

from __future__ import annotations

import networkx as nx

from .structure import TARGET, load_network, node_roles

__all__ = ["draw_network", "save_network_png", "ROLE_COLOURS"]

ROLE_COLOURS = {"context": "#bbbbbb", "target": "#d62728", "latent": "#ff9f40", "tested": "#9467bd",
                "concept": "#1f77b4", "cxr": "#2ca02c", "derived": "#17becf"}
_LATENT_ORDER = ["infection", "resp_infection", "inflammation", "circulation", "perfusion",
                 "respiration", "kidney", "liver", "coagulation", "cns"]


def draw_network(net, ax=None):
    """Draw ``net`` on ``ax`` (a new figure if None); returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    roles = node_roles(net)
    g = nx.DiGraph(list(net.edges()))
    g.add_nodes_from(net.nodes())
    lat = [v for v in _LATENT_ORDER if v in g] + sorted(v for v in g if roles[v] == "latent"
                                                           and v not in _LATENT_ORDER)
    rank = {v: i for i, v in enumerate(lat)}
    leaves = sorted([v for v in g if roles[v] in ("concept", "cxr", "tested")],
                    key=lambda v: (min([rank.get(p, len(rank)) for p in g.predecessors(v)] or [0]), v))
    width = max(len(leaves) - 1, 1)
    pos = {v: (float(i), 0.0 if i % 2 else 0.35) for i, v in enumerate(leaves)}
    pos.update({v: (width * (i + 0.5) / len(lat), 2.0) for i, v in enumerate(lat)})
    pos[TARGET] = (width / 2, 3.3)
    # derived leaves (trends, measurement ages) in a row of their own under the measured leaves
    derived = sorted([v for v in g if roles[v] == "derived"],
                     key=lambda v: (min([rank.get(p, len(rank)) for p in g.predecessors(v)] or [0]), v))
    pos.update({v: (width * (i + 0.5) / len(derived), -1.6 if i % 2 else -1.25) for i, v in enumerate(derived)})
    ctx = [v for v in g if roles[v] == "context"]
    pos.update({v: (width / 2 + (i - (len(ctx) - 1) / 2) * 6, 4.5) for i, v in enumerate(ctx)})
    if ax is None:
        _, ax = plt.subplots(figsize=(30, 9))
    nx.draw_networkx_edges(g, pos, ax=ax, edge_color="#aaaaaa", width=0.6, arrowsize=7, node_size=700)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=[ROLE_COLOURS[roles[v]] for v in g], node_size=700)
    for v, (x, y) in pos.items():
        low = y <= 0.0 and roles[v] != "target"
        # long leaf names (e.g. bloodgas_tested_24h) would collide with their neighbours upright
        rot = 20 if roles[v] in ("concept", "cxr", "tested", "derived") else 0
        ax.text(x, y - 0.22 if low else y + 0.2, v, ha="right" if (rot and low) else "left" if rot else "center",
                va="top" if low else "bottom" if rot else "center", fontsize=8, rotation=rot,
                rotation_mode="anchor")
    ax.legend(handles=[Patch(color=c, label=r) for r, c in ROLE_COLOURS.items()], loc="upper left")
    ax.axis("off")
    return ax


def save_network_png(path, network="full", *, dpi: int = 70):
    """Render a shipped network (or XMLBIF path) to ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(30, 9))
    ax = draw_network(load_network(network), ax=fig.subplots())
    ax.set_title(f"SepsisScope CPN, network '{network}' (edge reasons: cpn/networks/README.md)",
                 fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
