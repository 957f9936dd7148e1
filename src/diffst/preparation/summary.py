"""``summary.md`` of a prepared store: genes, molecules kept and dropped, patches, tissue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffst.preparation.plan import PatchPlan
    from diffst.sections.binning import SourceScan
    from diffst.sections.inputs import SectionInputs

__all__ = ["summary_markdown"]


def summary_markdown(
    manifest: dict[str, Any], section: SectionInputs, plan: PatchPlan, scan: SourceScan
) -> str:
    """A short human-readable report of what ``prepare`` did."""
    st = section.stats
    assert st is not None, "prepare sections carry their binning statistics"
    geo = manifest["geometry"]
    lines = [
        f"# diffst prepare: {manifest['sample']['name']} ({manifest['sample']['platform']})",
        "",
        f"HR grid {geo['shape_hr'][0]}×{geo['shape_hr'][1]} bins of {geo['hr_um']} µm, "
        f"LR {geo['lr_mode']} (factor {geo['factor']}), patches of {geo['patch']} bins "
        f"(stride {geo['stride']}, LR {geo['lr_size']}×{geo['lr_size']}).",
        f"Tissue covers {manifest['tissue_fraction']:.1%} of the grid.",
        "",
        "## Molecules",
        "",
        "| | molecules |",
        "|---|---:|",
        f"| read | {st.total:,} |",
        f"| not in panel (incl. controls) | {st.not_in_panel:,} |",
        f"| of which control probes | {int(scan.totals[scan.control].sum()):,} |",
        f"| panel, outside the grid | {st.outside_grid:,} |",
        f"| kept (binned) | {st.kept:,} |",
        "",
        "## Patches",
        "",
        f"{plan.n_candidates} windows in {plan.blocks.size} split blocks; "
        f"{plan.n_low_tissue} dropped (tissue share below the threshold).",
        "",
        "| split | patches | mean tissue fraction |",
        "|---|---:|---:|",
    ]
    for name, info in manifest["splits"].items():
        lines.append(f"| {name} | {info['n_patches']} | {info['tissue_fraction_mean']:.2f} |")
    lines += ["", "## Genes (train-split totals)", "", "| gene | total |", "|---|---:|"]
    for gene, total in zip(manifest["genes"], manifest["coexpr"]["s"], strict=True):
        lines.append(f"| {gene} | {int(total):,} |")
    return "\n".join(lines) + "\n"
