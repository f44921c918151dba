"""FLOP counting from ONNX Runtime profiles and the matmul ceiling graph (no timing asserts)."""

import numpy as np
import onnxruntime as ort

from vla_ros.runtime.bench.flops import inference_flops, matmul_model, node_flops


def _args(op, ins, out):
    return {'op_name': op, 'input_type_shape': [{'float': s} for s in ins],
            'output_type_shape': [{'float': out}]}


def test_a_matmul_costs_two_flops_per_output_and_reduced_element():
    assert node_flops(_args('MatMul', [[1, 4, 89, 89], [1, 4, 89, 16]], [1, 4, 89, 16])) \
        == 2 * 4 * 89 * 16 * 89


def test_a_transposed_operand_still_finds_the_reduced_dimension():
    # Gemm lists only A (K x M when transA) and the bias; the output gives M.
    assert node_flops(_args('Gemm', [[64, 89], [32]], [89, 32])) == 2 * 89 * 32 * 64


def test_a_conv_costs_its_kernel_volume_per_output():
    assert node_flops(_args('Conv', [[2, 3, 64, 64], [64, 3, 8, 8]], [2, 64, 8, 8])) \
        == 2 * (2 * 64 * 8 * 8) * (3 * 8 * 8)


def test_elementwise_ops_are_not_counted():
    assert node_flops(_args('Add', [[4, 4], [4, 4]], [4, 4])) == 0


def test_the_ceiling_graph_multiplies_matrices():
    from vla_ros.runtime.backends.ort import session_options

    sess = ort.InferenceSession(matmul_model(8), session_options(None),
                                providers=['CPUExecutionProvider'])
    a, b = np.random.default_rng(0).standard_normal((2, 8, 8), np.float32)
    np.testing.assert_allclose(sess.run(None, {'A': a, 'B': b})[0], a @ b, rtol=1e-5)


def test_a_flow_inference_counts_the_context_once_and_every_step(exported):
    from test_policy import observation

    pkg = exported['evo1'][1]
    f = inference_flops(pkg, observation(pkg))['flop_by_graph']
    assert f['head_context'] > 0 and f['head_step'] > 0 and f['vision'] > 0
    assert f['head_step'] % pkg.manifest.flow.num_steps == 0
