"""Interpretation toolkit beyond Grad-CAM (docs/method.md section 8.1): first-layer filters,
saliency (input gradient, guided backpropagation), occlusion, embeddings of the penultimate
features, class-model images, adversarial robustness, and the planted-signal measure on the
synthetic market. Pure functions per method family; :mod:`pipeline.interpret.core` runs the stage."""
