"""Post-hoc explanations of any gpcore model through Captum (occlusion, guided backprop)."""
