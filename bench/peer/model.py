"""OpenNMT-tf 2.32 peer of nmt's configs/small-parallel-enja.yaml model shape.

1-layer bidirectional LSTM encoder (256 units per direction, outputs and states
concatenated -> 512), DenseBridge (encoder final [h;c] 1024 -> decoder [h;c] 512),
1-layer LSTM decoder (256 units) with Luong ("general") attention and input feeding
(tfa AttentionWrapper: previous attentional vector concatenated to the input),
word embeddings 256 on both sides, dropout 0.2 on layer outputs.

Used by bench/throughput.py (and the other peer benchmarks): onmt-main --model bench/peer/model.py ...
"""
import opennmt
import tensorflow as tf
import tensorflow_addons as tfa


class PeerLuongLSTM(opennmt.models.SequenceToSequence):
    def __init__(self, units=256, embedding_size=256, dropout=0.2):
        super().__init__(
            source_inputter=opennmt.inputters.WordEmbedder(embedding_size=embedding_size),
            target_inputter=opennmt.inputters.WordEmbedder(embedding_size=embedding_size),
            # keras.layers.LSTM inside (fused loop); same weights as RNNEncoder+LSTMCell.
            encoder=opennmt.encoders.LSTMEncoder(
                num_layers=1,
                num_units=units,  # per direction
                bidirectional=True,
                reducer=opennmt.layers.ConcatReducer(),
                dropout=dropout,
                residual_connections=False,
            ),
            decoder=opennmt.decoders.AttentionalRNNDecoder(
                num_layers=1,
                num_units=units,
                bridge_class=opennmt.layers.DenseBridge,
                attention_mechanism_class=tfa.seq2seq.LuongAttention,  # score h_t^T W h_s
                cell_class=tf.keras.layers.LSTMCell,
                dropout=dropout,
                residual_connections=False,
            ),
        )


def model():
    return PeerLuongLSTM()
