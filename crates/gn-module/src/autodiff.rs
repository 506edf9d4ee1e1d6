//! The autodiff implementation: the whole normalization is one recorded op whose backward is
//! one call of the backend's fused backward.

use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;

use crate::backend::{GroupNormBackend, assert_backward_args, assert_forward_args};

#[derive(Debug)]
struct GroupNormOp;

/// What the backward needs: the input (checkpointed), the affine parameters and the statistics.
/// Nothing of the input's size besides the input itself is kept.
type State<B> = (
    NodeId,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    usize,
    u32,
);

impl<B: GroupNormBackend> Backward<B, 3> for GroupNormOp {
    type State = State<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma, beta, mean, rstd, num_groups, activation) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
        let (dx, dgamma, dbeta) =
            B::group_norm_backward(grad, x, gamma, beta, mean, rstd, num_groups, activation);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

impl<B: GroupNormBackend, C: CheckpointStrategy> GroupNormBackend for Autodiff<B, C> {
    fn group_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        num_groups: usize,
        epsilon: f64,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // The inner backend checks too; checked here first so that nothing is recorded for
        // invalid arguments.
        assert_forward_args(&x, &gamma, &beta, num_groups, epsilon, activation);
        match GroupNormOp
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let (gamma, beta) = (gamma.into_primitive(), beta.into_primitive());
                let (y, mean, rstd) = B::group_norm_forward(
                    x.into_primitive(),
                    gamma.clone(),
                    beta.clone(),
                    num_groups,
                    epsilon,
                    activation,
                );
                let state = (
                    x_id,
                    gamma,
                    beta,
                    mean.clone(),
                    rstd.clone(),
                    num_groups,
                    activation,
                );
                let y = prep.finish(state, y);
                (y, Self::from_inner(mean), Self::from_inner(rstd))
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, rstd) = B::group_norm_forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    num_groups,
                    epsilon,
                    activation,
                );
                (
                    prep.finish(y),
                    Self::from_inner(mean),
                    Self::from_inner(rstd),
                )
            }
        }
    }

    fn group_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        num_groups: usize,
        activation: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert_backward_args(
            &grad, &x, &gamma, &beta, &mean, &rstd, num_groups, activation,
        );
        // Not differentiable twice: the gradients are returned as constants.
        let (dx, dgamma, dbeta) = B::group_norm_backward(
            grad.into_primitive(),
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            mean.into_primitive(),
            rstd.into_primitive(),
            num_groups,
            activation,
        );
        (
            Self::from_inner(dx),
            Self::from_inner(dgamma),
            Self::from_inner(dbeta),
        )
    }
}
