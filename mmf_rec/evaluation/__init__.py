"""Full-catalogue evaluation (``catalogue``) and the classic baselines
(``baselines``) measured by it, so every model and baseline of a benchmark is
ranked against every item by the same code (see docs/data.md,
"Evaluation protocols")."""
