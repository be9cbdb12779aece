"""Triton python model: map a network's output back onto the full-resolution input image.

One file serves both ``tryon_postprocess`` (composite the try-on into the person photo) and
``recolor_postprocess`` (apply the colour change to the on-model photo, plus the garment mask): the layout is
chosen by the model's name. The logic lives in ``drape_serving.prepost``; this file only moves tensors.
"""

import triton_python_backend_utils as pb_utils

from drape_serving.model_config import ModelConfig
from drape_serving.prepost import RecolorPostLayout, TryonPostLayout

LAYOUTS = {"tryon_postprocess": TryonPostLayout, "recolor_postprocess": RecolorPostLayout}


class TritonPythonModel:
    def initialize(self, args):
        config = ModelConfig.from_json(args["model_config"])
        self.name = config.name
        self.layout = LAYOUTS[self.name].from_config(config)
        self.input_names = tuple(t.name for t in config.inputs)
        self.logger = pb_utils.Logger

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                outputs = self.layout.run(inputs)
                tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one broken request must not fail the batch
                self.logger.log_error(f"{self.name} failed: {type(exc).__name__}: {exc}")
                error = pb_utils.TritonError(f"{self.name} failed: {exc}", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        pass
