"""Generator alignment (SPEED): a teacher's seed set, junior SFT, teacher-judged preferences, senior
DPO, revisor SFT, and export of the aligned models. Framework-free; flow `align` wires it to Prefect."""
