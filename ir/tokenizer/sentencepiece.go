package tokenizer

import (
	"fmt"
	"math"
	"os"
	"strings"
)

// Field numbers of sentencepiece_model.proto (proto2).
const (
	// ModelProto
	spModelPieces     = 1
	spModelTrainer    = 2
	spModelNormalizer = 3

	// ModelProto.SentencePiece
	spPieceText  = 1
	spPieceScore = 2
	spPieceType  = 3

	// TrainerSpec
	spTrainerModelType    = 3
	spTrainerVocabSize    = 4
	spTrainerByteFallback = 35
	spTrainerUnkID        = 40
	spTrainerBosID        = 41
	spTrainerEosID        = 42
	spTrainerPadID        = 43
	spTrainerUnkPiece     = 45
	spTrainerBosPiece     = 46
	spTrainerEosPiece     = 47

	// NormalizerSpec
	spNormName              = 1
	spNormAddDummyPrefix    = 3
	spNormRemoveExtraSpaces = 4
	spNormEscapeWhitespaces = 5
)

// TrainerSpec.ModelType.
const (
	spUnigram = 1
	spBPE     = 2
	spWord    = 3
	spChar    = 4
)

func spModelTypeName(t uint64) string {
	switch t {
	case spUnigram:
		return "UNIGRAM"
	case spBPE:
		return "BPE"
	case spWord:
		return "WORD"
	case spChar:
		return "CHAR"
	}
	return fmt.Sprintf("unknown (%d)", t)
}

// spTrainer holds the TrainerSpec fields the tokenizer uses, with the
// proto2 defaults for those absent.
type spTrainer struct {
	modelType          uint64
	unk, bos, eos, pad int32
}

// LoadSentencePiece reads a SentencePiece model file (the tokenizer.model
// of Hugging Face and Meta Llama checkpoints); see ParseSentencePiece.
func LoadSentencePiece(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseSentencePiece(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseSentencePiece parses a serialized SentencePiece ModelProto. Pieces
// keep the file's spelling ('▁' for spaces, "<s>" for BOS), types and
// scores; UNK, BOS and EOS come from the trainer spec (default 0, 1, 2; -1
// means none for BOS and EOS). Fields the tokenizer does not use are
// skipped.
//
// Only BPE models are supported: Encode is llama2.c's greedy merge, which
// is SentencePiece's BPE algorithm; unigram (the proto's default model
// type), word and char models are rejected. Of the normalizer spec,
// add_dummy_prefix and remove_extra_whitespaces are honored
// (Tokenizer.NoDummyPrefix, FoldSpaces); its rule (NFKC and the like) is
// not applied, so Encode matches SentencePiece for the "identity" rule that
// Llama-family BPE models use.
func ParseSentencePiece(data []byte) (*Tokenizer, error) {
	tr := spTrainer{modelType: spUnigram, unk: 0, bos: 1, eos: 2, pad: -1}
	norm := spNormalizer{addDummyPrefix: true, removeExtraWhitespaces: true} // the proto's defaults
	t := &Tokenizer{}
	r := &pbReader{data: data}
	for !r.done() {
		at := r.pos()
		num, wire, err := r.key()
		if err != nil {
			return nil, fmt.Errorf("ModelProto: %w", err)
		}
		switch num {
		case spModelPieces, spModelTrainer:
			if err := want("ModelProto", num, wire, wireBytes, at); err != nil {
				return nil, err
			}
			msg, base, err := r.bytes()
			if err != nil {
				return nil, fmt.Errorf("ModelProto: %w", err)
			}
			sub := &pbReader{data: msg, base: base}
			if num == spModelPieces {
				err = parseSPPiece(sub, len(t.Pieces), t)
			} else {
				// A repeated embedded message merges into the first, as
				// protobuf specifies, hence one spTrainer for all.
				err = parseSPTrainer(sub, &tr)
			}
			if err != nil {
				return nil, err
			}
		case spModelNormalizer:
			if err := want("ModelProto", num, wire, wireBytes, at); err != nil {
				return nil, err
			}
			msg, base, err := r.bytes()
			if err != nil {
				return nil, fmt.Errorf("ModelProto: %w", err)
			}
			if err := parseSPNormalizer(&pbReader{data: msg, base: base}, &norm); err != nil {
				return nil, err
			}
		default:
			// Anything newer is not needed.
			if err := r.skip(num, wire, 0); err != nil {
				return nil, fmt.Errorf("ModelProto: %w", err)
			}
		}
	}
	if len(t.Pieces) == 0 {
		return nil, fmt.Errorf("SentencePiece model has no pieces")
	}
	if tr.modelType != spBPE {
		return nil, fmt.Errorf("unsupported SentencePiece model type %s: only BPE vocabularies (Llama's) are supported", spModelTypeName(tr.modelType))
	}
	n := len(t.Pieces)
	if tr.unk < 0 || int(tr.unk) >= n {
		return nil, fmt.Errorf("trainer spec unk_id %d outside the vocabulary of %d pieces", tr.unk, n)
	}
	for _, s := range []struct {
		name string
		id   int32
	}{{"bos_id", tr.bos}, {"eos_id", tr.eos}} {
		if s.id < -1 || int(s.id) >= n {
			return nil, fmt.Errorf("trainer spec %s %d outside the vocabulary of %d pieces", s.name, s.id, n)
		}
	}
	t.UNK, t.BOS, t.EOS = int(tr.unk), int(tr.bos), int(tr.eos)
	t.NoDummyPrefix, t.FoldSpaces = !norm.addDummyPrefix, norm.removeExtraWhitespaces
	return t, nil
}

// spNormalizer is what Encode takes from a NormalizerSpec.
type spNormalizer struct {
	addDummyPrefix, removeExtraWhitespaces bool
}

// parseSPNormalizer reads the flags Encode honors. The rule name and its
// precompiled character map are not applied (see ParseSentencePiece).
func parseSPNormalizer(r *pbReader, n *spNormalizer) error {
	for !r.done() {
		at := r.pos()
		num, wire, err := r.key()
		if err != nil {
			return fmt.Errorf("NormalizerSpec: %w", err)
		}
		var dst *bool
		switch num {
		case spNormAddDummyPrefix:
			dst = &n.addDummyPrefix
		case spNormRemoveExtraSpaces:
			dst = &n.removeExtraWhitespaces
		default:
			if err := r.skip(num, wire, 0); err != nil {
				return fmt.Errorf("NormalizerSpec: %w", err)
			}
			continue
		}
		if err := want("NormalizerSpec", num, wire, wireVarint, at); err != nil {
			return err
		}
		v, err := r.varint()
		if err != nil {
			return fmt.Errorf("NormalizerSpec field %d: %w", num, err)
		}
		*dst = v != 0
	}
	return nil
}

// parseSPPiece reads ModelProto.SentencePiece number i and appends it to t.
func parseSPPiece(r *pbReader, i int, t *Tokenizer) error {
	start := r.pos()
	var (
		piece string
		score float32
		typ   = Normal // the proto's default
	)
	for !r.done() {
		at := r.pos()
		num, wire, err := r.key()
		if err != nil {
			return fmt.Errorf("piece %d: %w", i, err)
		}
		switch num {
		case spPieceText:
			if err := want("SentencePiece", num, wire, wireBytes, at); err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			b, _, err := r.bytes()
			if err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			piece = string(b)
		case spPieceScore:
			if err := want("SentencePiece", num, wire, wireFixed32, at); err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			v, err := r.fixed32()
			if err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			score = math.Float32frombits(v)
		case spPieceType:
			if err := want("SentencePiece", num, wire, wireVarint, at); err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			v, err := r.varint()
			if err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
			if v < uint64(Normal) || v > uint64(Byte) {
				return fmt.Errorf("piece %d at offset %d: unknown type %d", i, at, v)
			}
			typ = TokenType(v)
		default:
			if err := r.skip(num, wire, 0); err != nil {
				return fmt.Errorf("piece %d: %w", i, err)
			}
		}
	}
	if piece == "" {
		return fmt.Errorf("piece %d at offset %d is empty (SentencePiece requires a non-empty piece)", i, start)
	}
	if _, ok := parseBytePiece(piece); typ == Byte && !ok {
		return fmt.Errorf("piece %d %q at offset %d has type BYTE but is not spelled <0xHH>", i, piece, start)
	}
	t.Pieces = append(t.Pieces, piece)
	t.Scores = append(t.Scores, score)
	t.Types = append(t.Types, typ)
	return nil
}

// parseSPTrainer reads the TrainerSpec fields in spTrainer.
func parseSPTrainer(r *pbReader, tr *spTrainer) error {
	for !r.done() {
		at := r.pos()
		num, wire, err := r.key()
		if err != nil {
			return fmt.Errorf("TrainerSpec: %w", err)
		}
		var dst *int32
		switch num {
		case spTrainerModelType:
			if err := want("TrainerSpec", num, wire, wireVarint, at); err != nil {
				return err
			}
			v, err := r.varint()
			if err != nil {
				return fmt.Errorf("TrainerSpec model_type: %w", err)
			}
			tr.modelType = v
			continue
		case spTrainerUnkID:
			dst = &tr.unk
		case spTrainerBosID:
			dst = &tr.bos
		case spTrainerEosID:
			dst = &tr.eos
		case spTrainerPadID:
			dst = &tr.pad
		default:
			if err := r.skip(num, wire, 0); err != nil {
				return fmt.Errorf("TrainerSpec: %w", err)
			}
			continue
		}
		if err := want("TrainerSpec", num, wire, wireVarint, at); err != nil {
			return err
		}
		v, err := r.varint()
		if err != nil {
			return fmt.Errorf("TrainerSpec field %d: %w", num, err)
		}
		*dst = int32(v) // protobuf int32: the low 32 bits of the varint
	}
	return nil
}

// spType is the SentencePiece type of piece i: t.Types when set, else what
// ParseLlama2c would infer. UNK is always UNKNOWN, which SentencePiece
// requires of exactly that piece.
func (t *Tokenizer) spType(i int) TokenType {
	if i == t.UNK {
		return Unknown
	}
	if i < len(t.Types) && t.Types[i] != 0 {
		return t.Types[i]
	}
	_, isByte := parseBytePiece(t.Pieces[i])
	switch {
	case i == t.BOS || i == t.EOS:
		return Control
	case isByte:
		return Byte
	}
	return Normal
}

// spPiece is piece i as SentencePiece spells it: spaces as '▁' and
// llama2.c's "\n<s>\n" and "\n</s>\n" as "<s>" and "</s>".
func (t *Tokenizer) spPiece(i int) string {
	p := t.Pieces[i]
	switch {
	case i == t.BOS && p == llama2cBOS:
		return "<s>"
	case i == t.EOS && p == llama2cEOS:
		return "</s>"
	case i == t.UNK && p == "":
		return "<unk>"
	}
	return strings.ReplaceAll(p, " ", spaceMarker)
}

// MarshalSentencePiece encodes t as a SentencePiece BPE ModelProto whose
// encoding agrees with Encode: pieces in SentencePiece spelling (spaces as
// '▁', BOS/EOS as "<s>"/"</s>" when stored the llama2.c way, an empty UNK
// as "<unk>"), byte pieces typed BYTE with byte_fallback on, and the
// identity normalizer with t's dummy prefix and whitespace folding (by
// default a dummy prefix and no folding, as in Llama's tokenizer.model). t must have an UNK piece; SentencePiece refuses
// models without one.
func MarshalSentencePiece(t *Tokenizer) ([]byte, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	if t.ByteLevel != nil {
		return nil, fmt.Errorf("a byte-level BPE vocabulary (tokenizer.json) cannot be written as a SentencePiece model")
	}
	if t.UNK < 0 {
		return nil, fmt.Errorf("tokenizer has no UNK piece, which a SentencePiece model needs")
	}
	w := &pbWriter{}
	var piece pbWriter
	byteFallback := false
	for i := range t.Pieces {
		p, typ := t.spPiece(i), t.spType(i)
		if p == "" {
			return nil, fmt.Errorf("piece %d is empty; SentencePiece pieces must not be", i)
		}
		if typ < Normal || typ > Byte {
			return nil, fmt.Errorf("piece %d %q has token type %d, which SentencePiece does not define", i, p, typ)
		}
		if _, ok := parseBytePiece(p); typ == Byte {
			if !ok {
				return nil, fmt.Errorf("piece %d %q has type Byte but is not spelled <0xHH>", i, p)
			}
			byteFallback = true
		}
		piece.b = piece.b[:0]
		piece.string(spPieceText, p)
		piece.float(spPieceScore, t.Scores[i])
		if typ != Normal { // the default, which SentencePiece leaves out too
			piece.uvarint(spPieceType, uint64(typ))
		}
		w.bytes(spModelPieces, piece.b)
	}

	// Fields in ascending order, as protobuf serializers write them.
	var tr pbWriter
	tr.uvarint(spTrainerModelType, spBPE)
	tr.int32(spTrainerVocabSize, int32(min(len(t.Pieces), math.MaxInt32)))
	tr.bool(spTrainerByteFallback, byteFallback)
	tr.int32(spTrainerUnkID, int32(t.UNK))
	tr.int32(spTrainerBosID, int32(t.BOS))
	tr.int32(spTrainerEosID, int32(t.EOS))
	tr.int32(spTrainerPadID, -1)
	// Name the special pieces when they are not the defaults, which
	// SentencePiece's trainer would otherwise assume.
	for _, s := range []struct {
		field, id int
		def       string
	}{{spTrainerUnkPiece, t.UNK, "<unk>"}, {spTrainerBosPiece, t.BOS, "<s>"}, {spTrainerEosPiece, t.EOS, "</s>"}} {
		if s.id >= 0 {
			if p := t.spPiece(s.id); p != s.def {
				tr.string(s.field, p)
			}
		}
	}
	w.bytes(spModelTrainer, tr.b)

	var norm pbWriter
	norm.string(spNormName, "identity")
	norm.bool(spNormAddDummyPrefix, !t.NoDummyPrefix)
	norm.bool(spNormRemoveExtraSpaces, t.FoldSpaces)
	norm.bool(spNormEscapeWhitespaces, true)
	w.bytes(spModelNormalizer, norm.b)
	return w.b, nil
}

// WriteSentencePiece writes t as a SentencePiece model file (see
// MarshalSentencePiece) atomically: readers never see a partial file.
func WriteSentencePiece(t *Tokenizer, path string) error {
	data, err := MarshalSentencePiece(t)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return writeFileAtomic(path, data)
}
