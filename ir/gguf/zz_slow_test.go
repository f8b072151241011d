package gguf
import ("os";"path/filepath";"strconv";"strings";"testing";"runtime";"sort")
func TestZZAlloc(t *testing.T){
 files,_:=filepath.Glob("/root/.cache/go-build/fuzz/github.com/whittle-ml/whittle/ir/gguf/FuzzParse/*")
 type r struct{a uint64; f string; n int}
 var rs []r
 var ms runtime.MemStats
 for _,fn:=range files{ b,_:=os.ReadFile(fn); s:=string(b); i:=strings.Index(s,"[]byte("); lit:=strings.TrimSpace(s[i+7:]); lit=lit[:len(lit)-1]
  data,_:=strconv.Unquote(lit)
  runtime.ReadMemStats(&ms); a0:=ms.TotalAlloc
  f,err:=Parse("x",[]byte(data)); if err==nil { f.Model() }
  runtime.ReadMemStats(&ms); rs=append(rs,r{ms.TotalAlloc-a0,filepath.Base(fn),len(data)}) }
 sort.Slice(rs,func(i,j int)bool{return float64(rs[i].a)/float64(rs[i].n+1)>float64(rs[j].a)/float64(rs[j].n+1)})
 for _,x:=range rs[:6]{t.Log(x.a,x.n,x.f)}
}
