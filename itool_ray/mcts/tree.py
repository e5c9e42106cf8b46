"""One search tree over partial answers: nodes, PUCT selection with virtual loss, backup, JSON form.

A node is a prefix of the answer text that ends at a syntax-step boundary (``toolcall.first_step``); the
root is the empty prefix and every other node adds one step to its parent's prefix. Values are rewards in
[0, 1] from the AST reward, so 0 is a loss.

- ``visits`` counts the rollouts scored in the node's subtree and ``value`` (Q) is their mean: every
  rollout reward is backed up to each node on its path, once.
- Every non-root node is born visited: the sampled continuation that created it is its first rollout
  (see ``search.py``), so PUCT never divides by an empty child.
- Each node remembers its best *complete* rollout (the full answer text and its reward), which is what a
  preference pair continues a diverging step with (``pairs.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Tree.status values.
PENDING, DONE, FAILED = "pending", "done", "failed"


@dataclass
class Node:
    id: int
    parent: int | None
    step: str  # the text this node adds to its parent's prefix ("" at the root)
    prefix_len: int  # len(prefix) in characters
    depth: int  # steps beyond the root
    prior: float = 1.0  # policy prior for PUCT, normalised over siblings
    visits: int = 0
    value_sum: float = 0.0
    terminal: bool = False  # the answer ends after this step (or its token budget is spent)
    reward: float | None = None  # the AST reward of the prefix as an answer; terminal nodes only
    count: int = 1  # how many sampled continuations produced this same step (merged duplicates)
    prefix_tokens: int = 0  # generated tokens the prefix took (estimated; see search._step_tokens)
    best_rollout: str | None = None  # the best complete answer seen through this node (full text)
    best_reward: float | None = None
    expanded: bool = False  # the policy was asked for this node's children
    children: list[int] = field(default_factory=list)
    # Transient search state, never serialised.
    pending: int = 0  # simulations in flight through this node (virtual loss)
    busy: bool = False  # a leaf whose expansion or rollout is in flight

    @property
    def value(self) -> float:
        """Q: mean rollout reward in the subtree (0 while unvisited)."""
        return self.value_sum / self.visits if self.visits else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "step": self.step,
            "prefix_len": self.prefix_len,
            "depth": self.depth,
            "visits": self.visits,
            "value": self.value,
            "prior": self.prior,
            "terminal": self.terminal,
            "reward": self.reward,
            "count": self.count,
            "prefix_tokens": self.prefix_tokens,
            "best_rollout": self.best_rollout,
            "best_reward": self.best_reward,
            "expanded": self.expanded,
        }


@dataclass
class Tree:
    sample_id: str
    nodes: list[Node] = field(default_factory=list)
    status: str = PENDING
    attempts: int = 1  # 2 when this tree is the retry of a failed one
    error: str | None = None  # why attempts failed ("attempt 1: ..."); a retried done tree keeps it
    simulations: int = 0  # leaves selected so far
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, step="", prefix_len=0, depth=0))

    # -- structure ------------------------------------------------------------------------------
    @property
    def root(self) -> Node:
        return self.nodes[0]

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def path(self, node: Node) -> list[Node]:
        """Root .. node."""
        out = [node]
        while out[-1].parent is not None:
            out.append(self.nodes[out[-1].parent])
        return out[::-1]

    def prefix(self, node: Node) -> str:
        return "".join(n.step for n in self.path(node))

    def add_child(self, parent: Node, step: str, **fields: Any) -> Node:
        child = Node(
            id=len(self.nodes),
            parent=parent.id,
            step=step,
            prefix_len=parent.prefix_len + len(step),
            depth=parent.depth + 1,
            **fields,
        )
        self.nodes.append(child)
        parent.children.append(child.id)
        return child

    # -- selection ------------------------------------------------------------------------------
    def puct(self, parent: Node, child: Node, c_puct: float, virtual_loss: float) -> float:
        """Q + U with virtual loss: each simulation in flight through a node counts as ``virtual_loss``
        extra visits of reward 0 (both Q and the exploration bonus drop), so concurrent selections in one
        tree spread over different leaves.

            Q = W / (N + vl·pending)      U = c_puct · P · sqrt(N_parent + vl·pending_parent) / (1 + N + vl·pending)
        """
        n = child.visits + virtual_loss * child.pending
        q = child.value_sum / n if n > 0 else 0.0
        n_parent = parent.visits + virtual_loss * parent.pending
        return q + c_puct * child.prior * math.sqrt(n_parent) / (1.0 + n)

    def _blocked(self, node: Node) -> bool:
        """Nothing selectable below: a leaf awaiting the engine, or an inner node whose leaves all are."""
        if node.busy:
            return True
        return bool(node.children) and all(self._blocked(c) for c in self.children(node))

    def select(self, c_puct: float, virtual_loss: float) -> Node | None:
        """Descend by PUCT to a leaf that is not already in flight and add virtual loss along the path.

        None when every leaf is in flight. Ties go to the earlier child (deterministic).
        """
        if self._blocked(self.root):
            return None
        node = self.root
        while node.children:
            parent = node
            open_children = [c for c in self.children(parent) if not self._blocked(c)]
            node = max(open_children, key=lambda c: self.puct(parent, c, c_puct, virtual_loss))
        for n in self.path(node):
            n.pending += 1
        return node

    def release(self, node: Node) -> None:
        """Remove the virtual loss a selection of ``node`` added."""
        for n in self.path(node):
            n.pending -= 1

    # -- backup ---------------------------------------------------------------------------------
    def backup(self, node: Node, reward: float, answer: str | None = None) -> None:
        """Add one rollout reward to ``node`` and its ancestors; ``answer`` is the rollout's full text when
        it is a complete answer (candidate best rollout), None when it was cut by the token budget."""
        for n in self.path(node):
            n.visits += 1
            n.value_sum += reward
            if answer is not None and (n.best_reward is None or reward > n.best_reward):
                n.best_rollout, n.best_reward = answer, reward

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """One JSON-lines record; ``Tree.from_dict`` loads it back (transient search state excluded)."""
        return {
            "sample_id": self.sample_id,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "simulations": self.simulations,
            "wall_s": round(self.wall_s, 3),
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        sample_id = d.get("sample_id", "?")
        try:
            nodes = []
            for i, nd in enumerate(d["nodes"]):
                if nd["id"] != i:
                    raise ValueError(f"node {i} has id {nd['id']}; nodes must be stored in id order")
                visits = int(nd["visits"])
                nodes.append(
                    Node(
                        id=i,
                        parent=nd["parent"],
                        step=nd["step"],
                        prefix_len=nd["prefix_len"],
                        depth=nd["depth"],
                        prior=float(nd["prior"]),
                        visits=visits,
                        value_sum=float(nd["value"]) * visits,
                        terminal=bool(nd["terminal"]),
                        reward=nd.get("reward"),
                        count=nd.get("count", 1),
                        prefix_tokens=nd.get("prefix_tokens", 0),
                        best_rollout=nd.get("best_rollout"),
                        best_reward=nd.get("best_reward"),
                        expanded=nd.get("expanded", False),
                    )
                )
            for n in nodes[1:]:
                if n.parent is None or not 0 <= n.parent < n.id:
                    raise ValueError(
                        f"node {n.id} has parent {n.parent}; a parent must come before its child"
                    )
                nodes[n.parent].children.append(n.id)
            if not nodes or nodes[0].parent is not None:
                raise ValueError("the first node must be the root (parent null)")
            return cls(
                sample_id=sample_id,
                nodes=nodes,
                status=d["status"],
                attempts=d.get("attempts", 1),
                error=d.get("error"),
                simulations=d.get("simulations", 0),
                wall_s=d.get("wall_s", 0.0),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tree record for sample {sample_id!r} is malformed: {e!r}") from None
