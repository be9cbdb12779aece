"""Triton python model: map a network's output back onto the full-resolution input image.

One file serves both ``tryon_postprocess`` (composite the try-on into the person photo) and
``recolor_postprocess`` (apply the colour change to the on-model photo, plus the garment mask): the layout is
chosen by the model's name. The logic lives in ``drape_runtime.prepost``; this file only moves tensors.
"""

import triton_python_backend_utils as pb_utils

from drape_runtime.model_config import ModelConfig
from drape_core.recolor_policy import RECOLOR_DECISIONS
from drape_runtime.prepost import RecolorPostLayout, TryonPostLayout

LAYOUTS = {"tryon_postprocess": TryonPostLayout, "recolor_postprocess": RecolorPostLayout}


class TritonPythonModel:
    def initialize(self, args):
        config = ModelConfig.from_json(args["model_config"])
        self.name = config.name
        self.layout = LAYOUTS[self.name].from_config(config)
        self.input_names = tuple(t.name for t in config.inputs)
        self.logger = pb_utils.Logger
        self.gate = None
        if self.name == "recolor_postprocess":   # how often recolor returns the photo as it is (see prepost)
            self.gate_family = pb_utils.MetricFamily(   # kept alive: its Metrics die with it
                name="drape_recolor_gate_total",
                description="recolor requests by what recolor_postprocess did with the network's change: applied, "
                "kept the photo as it is (mean CIE76 change below the keep_below_delta_e76 parameter), or served the "
                "classical transfer as the fallback (closer to the still by more than still_fallback_margin)",
                kind=pb_utils.MetricFamily.COUNTER,
            )
            self.gate = {d: self.gate_family.Metric(labels={"decision": d}) for d in RECOLOR_DECISIONS}

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                decisions = [] if self.gate else None
                outputs = self.layout.run(inputs, decisions) if self.gate else self.layout.run(inputs)
                for decision in decisions or ():
                    try:   # a metric must never fail the request it counts
                        self.gate[decision].increment(1)
                    except Exception as exc:
                        self.logger.log_error(f"{self.name}: drape_recolor_gate_total not counted: {exc}")
                tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one broken request must not fail the batch
                self.logger.log_error(f"{self.name} failed: {type(exc).__name__}: {exc}")
                error = pb_utils.TritonError(f"{self.name} failed: {exc}", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        pass
