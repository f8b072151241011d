package ir

import "math"

// RopeInvFreq returns the inverse frequency of each rotated dimension pair
// of a head, after the configured scaling; pair i rotates by pos*freq[i].
// Every backend derives RoPE from this one function so they agree.
func (c *Config) RopeInvFreq(headDim int) []float64 {
	half := headDim / 2
	freq := make([]float64, half)
	for i := range freq {
		freq[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(headDim))
	}
	s := c.RopeScaling
	if s == nil || s.Factor == 0 {
		return freq
	}
	switch s.Type {
	case "linear":
		for i := range freq {
			freq[i] /= s.Factor
		}
	case "llama3":
		// Llama 3.1's smooth interpolation between the scaled low
		// frequencies and the untouched high ones.
		lowWavelen := float64(s.OriginalMaxPos) / s.LowFreqFactor
		highWavelen := float64(s.OriginalMaxPos) / s.HighFreqFactor
		for i, f := range freq {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				freq[i] = f / s.Factor
			default:
				smooth := (float64(s.OriginalMaxPos)/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				freq[i] = (1-smooth)*f/s.Factor + smooth*f
			}
		}
	}
	return freq
}
