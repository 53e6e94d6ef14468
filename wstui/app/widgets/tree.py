"""The layer tree: model > embeddings | block N > attention | mlp | norms > tensor; head.

Labels carry a severity badge (the worst state below the node). For big checkpoints the
children of a block are created only when it is first expanded, so the first paint of an
80-block model costs 80 nodes, not 720. `apply_filter` rebuilds the tree with the matching
tensors only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode as UINode

from wstui.app.bindings import FOLD, MOVE, SELECT
from wstui.app.format import PENDING, badge, plural, shape_text
from wstui.render import visible

#: more tensors than this: block children are built on expand
LAZY_THRESHOLD = 300
#: cells of tree guide per level of depth (Textual's guides at guide_depth 2)
GUIDE_WIDTH = 2


def walk(node: Any) -> Iterator[Any]:
    yield node
    for c in node.children:
        yield from walk(c)


def matches(pattern: str, name: str) -> bool:
    """Case-insensitive substring match, or a glob when the pattern has wildcards."""
    p, n = pattern.lower(), name.lower()
    if any(ch in p for ch in "*?["):
        return fnmatch.fnmatchcase(n, p if p.startswith("*") else f"*{p}*")
    return p in n


class LayerTree(Tree[Any]):
    """A `Tree` whose node data are naming `TreeNode`s (label, key, children, tensor, ...)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False, id="tree.down", group=MOVE),
        Binding("k", "cursor_up", "Up", show=False, id="tree.up", group=MOVE),
        Binding("h,left", "collapse_or_parent", "Collapse", show=False, id="tree.collapse",
                group=FOLD),
        Binding("l,right", "expand_or_child", "Expand", show=False, id="tree.expand",
                group=FOLD),
        Binding("enter", "select_cursor", "Select", show=False, id="tree.select",
                group=SELECT),
    ]

    def __init__(self, root: Any, state_of: Callable[[str], str], **kwargs: Any) -> None:
        super().__init__(self._label_text(root, PENDING), data=root, **kwargs)
        self.model_root = root
        self.state_of = state_of
        self.show_root = True
        self.guide_depth = 2
        self.auto_expand = False
        self.nodes_by_key: dict[str, UINode[Any]] = {}
        self.unloaded: set[str] = set()
        self.lazy = sum(1 for n in walk(root) if n.tensor is not None) > LAZY_THRESHOLD
        self.filter_text = ""
        self.populate()

    # --- building ----------------------------------------------------------------------------

    def populate(self) -> None:
        """(Re)build the visible tree from the model tree and the current filter."""
        self.clear()
        self.nodes_by_key = {self.model_root.key: self.root}
        self.unloaded: set[str] = set()
        self.root.data = self.model_root
        self.root.set_label(self._label_text(self.model_root, self.state_of(self.model_root.key)))
        if self.filter_text:
            if not self._add_filtered(self.root, self.model_root):  # say so, not an empty tree
                self.root.set_label(self.root.label.copy().append(
                    f"  no tensor matches {self.filter_text!r}", style="italic"))
            self.root.expand_all()
        else:
            self._add_children(self.root, self.model_root)
            self.root.expand()
            for child in self.root.children:
                if child.data.group in ("embeddings", "head") or (
                    child.data.block is None and child.data.tensor is None
                    and len(self.root.children) <= 4
                ):
                    child.expand()

    def _add_children(self, ui: UINode[Any], node: Any) -> None:
        for child in node.children:
            self._add(ui, child, deep=not (self.lazy and child.group == "block"))

    def _add(self, ui: UINode[Any], node: Any, *, deep: bool) -> UINode[Any]:
        label = self._label_text(node, self.state_of(node.key))
        if node.tensor is not None:
            new = ui.add_leaf(label, data=node)
        else:
            new = ui.add(label, data=node, allow_expand=bool(node.children))
            if deep:
                self._add_children(new, node)
                if node.group not in ("block", "model"):
                    new.expand()  # attention / mlp / norms open with their block
            else:
                self.unloaded.add(node.key)
        self.nodes_by_key[node.key] = new
        return new

    def _add_filtered(self, ui: UINode[Any], node: Any) -> bool:
        """Add the part of `node` that holds matching tensors; True when anything matched."""
        found = False
        for child in node.children:
            if child.tensor is not None:
                names = (child.tensor.name, child.tensor.display_name)
                if any(matches(self.filter_text, n) for n in names):
                    self._add(ui, child, deep=True)
                    found = True
                continue
            if not self._any_match(child):
                continue
            sub = ui.add(self._label_text(child, self.state_of(child.key)), data=child)
            self.nodes_by_key[child.key] = sub
            self._add_filtered(sub, child)
            found = True
        return found

    def _any_match(self, node: Any) -> bool:
        return any(
            matches(self.filter_text, n.tensor.name) or matches(self.filter_text,
                                                                n.tensor.display_name)
            for n in walk(node) if n.tensor is not None
        )

    def ensure_loaded(self, ui: UINode[Any]) -> None:
        """Create a lazy block's children (first expand, or a jump into it)."""
        if ui.data.key in self.unloaded:
            self.unloaded.discard(ui.data.key)
            self._add_children(ui, ui.data)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Any]) -> None:
        self.ensure_loaded(event.node)

    def apply_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self.populate()
        self.cursor_line = 0

    # --- labels ------------------------------------------------------------------------------

    def render_label(self, node: UINode[Any], base_style: Style, style: Style) -> Text:
        """The label cut to the pane's width so that it never misleads: the shape goes whole
        or not at all (never `384` as `38`), and a long name loses its middle, not its ends
        (`embed…Norm.weight` and `embed…rNorm.bias` stay apart)."""
        text = super().render_label(node, base_style, style)
        depth = 0
        parent = node.parent
        while parent is not None:
            depth += 1
            parent = parent.parent
        room = self.scrollable_content_region.width - GUIDE_WIDTH * depth
        if room <= 0 or text.cell_len <= room:
            return text
        suffix = self._suffix(node.data).cell_len if node.data is not None else 0
        if suffix:
            text = text[:text.cell_len - suffix]  # the shape goes whole or not at all
        if text.cell_len <= room:
            return text
        lead = 4 if node.allow_expand else 2  # the toggle icon and the badge stay
        keep = max(2, room - lead - 1)
        head = keep // 3  # a name's head and tail both tell siblings apart:
        tail = keep - head  # `atte…orm.weight`, `outp…orm.weight`, `…Norm.bias`
        return Text.assemble(text[:lead + head], "…", text[text.cell_len - tail:])

    @staticmethod
    def _label_text(node: Any, state: str) -> Text:
        text = Text.assemble(badge(state), " ", visible(node.label))  # a Text: never markup
        return text.append_text(LayerTree._suffix(node))

    @staticmethod
    def _suffix(node: Any) -> Text:
        """What follows the name: a tensor's shape, the model's tensor count."""
        text = Text()
        if node.tensor is not None:
            text.append(f"  {shape_text(node.tensor.shape)}", style="dim")
            if node.tensor.tied_to:
                text.append(" (tied)", style="dim italic")
        elif node.group == "model":
            text.append(f"  {plural(node.n_tensors, 'tensor')}", style="dim")
        return text

    def set_state(self, key: str, state: str) -> None:
        ui = self.nodes_by_key.get(key)
        if ui is not None:
            ui.set_label(self._label_text(ui.data, state))

    # --- navigation --------------------------------------------------------------------------

    def node_for_key(self, key: str) -> UINode[Any] | None:
        """The UI node of `key`, creating lazy ancestors' children as needed."""
        ui = self.nodes_by_key.get(key)
        if ui is not None:
            return ui
        path = _path_to(self.model_root, key)
        if path is None:
            return None
        for node in path[:-1]:
            anc = self.nodes_by_key.get(node.key)
            if anc is None:
                return None
            self.ensure_loaded(anc)
        return self.nodes_by_key.get(key)

    def reveal(self, key: str) -> bool:
        """Expand the ancestors of `key` and move the cursor onto it."""
        ui = self.node_for_key(key)
        if ui is None:
            return False
        parent = ui.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        _ = self.last_line  # rebuilds the line index so that the new node has its line
        self.move_cursor(ui)
        return True

    def action_collapse_or_parent(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent)

    def action_expand_or_child(self) -> None:
        node = self.cursor_node
        if node is None or not node.allow_expand:
            return
        if not node.is_expanded:
            self.ensure_loaded(node)
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])


def _path_to(root: Any, key: str) -> list[Any] | None:
    if root.key == key:
        return [root]
    for c in root.children:
        p = _path_to(c, key)
        if p is not None:
            return [root, *p]
    return None
