package tokenizer

import "strings"

// DecodeToken is llama2.c run.c's decode: the text of token id when it
// follows token prev. After BOS the piece loses one leading space (the
// dummy prefix); a "<0xHH>" piece is the raw byte. Control pieces are
// returned as they are spelled (run.c prints them); an out-of-range id
// decodes to "".
func (t *Tokenizer) DecodeToken(prev, id int) string {
	if id < 0 || id >= len(t.Pieces) {
		return ""
	}
	if t.ByteLevel != nil {
		return string(t.ByteLevel.tokenBytes(t, id))
	}
	ix := t.index()
	return ix.decode(t.stripsAfter(prev), int32(id))
}

func (ix *index) decode(afterBOS bool, id int32) string {
	p := ix.text[id]
	if afterBOS && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	if b := ix.byteOf[id]; b >= 0 {
		return string([]byte{byte(b)})
	}
	return p
}

// Decode turns ids back into text: each token as DecodeToken after its
// predecessor, except that control tokens (BOS, EOS) produce nothing and
// out-of-range ids are skipped. Decode(Encode(s, true, eos)) == s for any
// s, since exactly the dummy-prefix space is dropped after BOS (without BOS
// the result is " "+s), provided the vocabulary has the piece " " and all
// 256 byte pieces and no merge spells a byte or control piece (true of
// tok512).
func (t *Tokenizer) Decode(ids []int) string {
	if bl := t.ByteLevel; bl != nil {
		// Bytes first, text last: a character may span tokens.
		var b []byte
		for _, id := range ids {
			if id >= 0 && id < len(t.Pieces) && t.Types[id] != Control && t.Types[id] != Unused {
				b = append(b, bl.tokenBytes(t, id)...)
			}
		}
		return string(b)
	}
	ix := t.index()
	var sb strings.Builder
	prev := -1
	for _, id := range ids {
		if id < 0 || id >= len(t.Pieces) {
			prev = id
			continue
		}
		if !ix.control[id] {
			sb.WriteString(ix.decode(t.stripsAfter(prev), int32(id)))
		}
		prev = id
	}
	return sb.String()
}

func (t *Tokenizer) isBOS(id int) bool { return id >= 0 && id == t.BOS }

// stripsAfter reports whether the token after prev loses its leading
// space: after BOS, when Encode put the dummy prefix there.
func (t *Tokenizer) stripsAfter(prev int) bool { return t.isBOS(prev) && !t.NoDummyPrefix }
