"""Methods layer: pure computations that map cached feature, score and label arrays to scores or choices, each a
small module, fitted learners as fit/score objects (scikit-learn's habit): the linear probe (`logistic`),
Tip-Adapter (`tip_adapter`), few-shot draws (`shots`), temperature scaling (`temperature`) and template selection
(`template_selection`). They load no model and no dataset: the jobs in `evaluation/` do, and call these."""
