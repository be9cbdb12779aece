"""Triton python model: decode and letterbox one image pair per request.

Serves both ``tryon_preprocess`` and ``recolor_preprocess``: input and output
names and the model resolution come from the model config this instance was
loaded with (see ``drape_runtime.prepost.PreprocessLayout``). A bad image fails
only its own request, with INVALID_ARGUMENT and a message naming the input.
"""

import triton_python_backend_utils as pb_utils

from drape_runtime.codec import ImageInputError
from drape_runtime.model_config import ModelConfig
from drape_runtime.prepost import PreprocessLayout, preprocess_pair


class TritonPythonModel:
    def initialize(self, args):
        self.layout = PreprocessLayout.from_config(ModelConfig.from_json(args["model_config"]))
        self.logger = pb_utils.Logger

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                encoded_a = pb_utils.get_input_tensor_by_name(request, self.layout.input_a).as_numpy()
                encoded_b = pb_utils.get_input_tensor_by_name(request, self.layout.input_b).as_numpy()
                outputs = preprocess_pair(encoded_a, encoded_b, self.layout)
                tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except ImageInputError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as exc:  # one broken request must not fail the batch
                self.logger.log_error(f"preprocess failed: {type(exc).__name__}: {exc}")
                error = pb_utils.TritonError(f"preprocess failed: {exc}", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        pass
