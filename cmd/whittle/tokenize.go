package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/whittle-ml/whittle/ir/modelio"
	"github.com/whittle-ml/whittle/ir/tokenizer"
)

func newTokenizeCmd() *cobra.Command {
	var (
		mf        modelFlags
		modelPath string
		bos, eos  bool
		idsOnly   bool
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize [--model M] [--tokenizer T] [--bos] [--ids] [--json] [TEXT...]",
		Short: "Show how a model's tokenizer splits text (standard input when no TEXT is given)",
		Long: `tokenize encodes text as the passes do when they prepare data, and prints
one token per line: its id and its text. --ids prints the ids alone, --json
one object with ids and pieces. The tokenizer is a file (--tokenizer:
tokenizer.model, tokenizer.bin, tokenizer.json, or any GGUF file, told
by its magic), or a model's own (--model, which may also be a
vocabulary-only GGUF such as llama.cpp's ggml-vocab-*.gguf; with
--tokenizer too, the file overrides it as for the model).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelPath == "" && mf.tokenizer == "" {
				return usageErr("tokenize: give --model or --tokenizer")
			}
			var tok *tokenizer.Tokenizer
			switch {
			case modelPath != "" && modelio.VocabOnly(modelPath):
				// A vocabulary-only GGUF is a tokenizer, not a model;
				// --tokenizer still overrides it.
				path := modelPath
				if mf.tokenizer != "" {
					path = mf.tokenizer
				}
				var err error
				if tok, err = modelio.LoadTokenizer(path); err != nil {
					return fmt.Errorf("tokenize: %w", err)
				}
			case modelPath != "":
				m, err := mf.load(modelPath)
				if err != nil {
					return err
				}
				defer m.Close()
				if tok = m.Tokenizer; tok == nil {
					return fmt.Errorf("tokenize: %s carries no tokenizer; pass --tokenizer", modelPath)
				}
			default:
				var err error
				if tok, err = modelio.LoadTokenizer(mf.tokenizer); err != nil {
					return fmt.Errorf("tokenize: %w", err)
				}
			}
			text := strings.Join(args, " ")
			if len(args) == 0 {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("tokenize: reading standard input: %w", err)
				}
				text = string(b)
			}
			ids := tok.Encode(text, bos, eos)
			pieces := make([]string, len(ids))
			for i, id := range ids {
				prev := -1
				if i > 0 {
					prev = ids[i-1]
				}
				pieces[i] = tok.DecodeToken(prev, id)
			}
			w := cmd.OutOrStdout()
			switch {
			case asJSON:
				return writeJSON(w, map[string]any{"ids": ids, "pieces": pieces, "tokens": len(ids)})
			case idsOnly:
				s := make([]string, len(ids))
				for i, id := range ids {
					s[i] = strconv.Itoa(id)
				}
				_, err := fmt.Fprintln(w, strings.Join(s, " "))
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for i, id := range ids {
				fmt.Fprintf(tw, "%d\t%s\n", id, strconv.Quote(pieces[i]))
			}
			fmt.Fprintf(tw, "%d tokens, %d bytes\n", len(ids), len(text))
			return tw.Flush()
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVar(&modelPath, "model", "", "model whose tokenizer to use (HF directory, .gguf, vocabulary-only .gguf or llama2.c .bin)")
	cmd.Flags().BoolVar(&bos, "bos", false, "put BOS first, as data preparation does")
	cmd.Flags().BoolVar(&eos, "eos", false, "put EOS last")
	cmd.Flags().BoolVar(&idsOnly, "ids", false, "print the ids alone, on one line")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
