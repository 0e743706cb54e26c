package api

import (
	"cmp"
	"context"
	"errors"
	"math"
	"net/url"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/projections"
)

// The web UI's explanations (issue 13): the "Explanation" section of the
// run and model version pages, drawn from the explanation.json artifact
// (package explain). Everything is drawn on the server as SVG (no script,
// nothing inline: the CSP holds), with a table of the same numbers beside
// every figure for screen readers and text browsers: a bar chart of the
// global importances (with their std as a whisker), one small line chart
// per feature effect, and on the version page the importances' change
// against the previous version's explanation. Feature names are the
// uploader's text: the templates escape them like any other.

const (
	// uiMaxImportances bounds the importances drawn and listed (the
	// highest first), uiMaxEffects the effect curves.
	uiMaxImportances = 50
	uiMaxEffects     = 20
	// uiMaxCurvePoints bounds the points of one drawn curve and
	// uiMaxEffectRows the rows of its table (evenly sampled).
	uiMaxCurvePoints = 200
	uiMaxEffectRows  = 25
	// uiMaxChanges bounds the comparison's rows (the largest changes).
	uiMaxChanges = 50
	// uiMaxClasses bounds the per-class breakdowns listed and
	// uiMaxClassRows the importances of each (the highest).
	uiMaxClasses   = 10
	uiMaxClassRows = 10
	// uiLabelRunes is where a feature's label in a figure is cut (its
	// table shows it whole).
	uiLabelRunes = 26
)

// explanationView is the Explanation section of a page.
type explanationView struct {
	// Found is false when there is no explanation to show: Reason says
	// why (none uploaded, or the file is not a valid explanation).
	Found  bool
	Reason string
	// From says whose artifact it is ("this run", "this version", "the
	// version's run") and Href where to download it.
	From, Href string
	Dataset    string // one line: name, rows, split, digest
	Target     string
	Metric     string
	Groups     []importanceGroup // by method
	Omitted    int               // importances beyond uiMaxImportances
	Effects    []effectChart
	EffOmitted int
	// Classes are the per-class breakdowns (tables, not drawn), at most
	// uiMaxClasses; ClassOmitted counts the rest.
	Classes      []classView
	ClassOmitted int
	Compare      *explanationComparison
}

// importanceGroup is the bar chart (and table) of one method's
// importances, highest first, in SVG user units.
type importanceGroup struct {
	ID     string // element id prefix
	Method string
	Bars   []importanceBar
	Height string
	Zero   string // x of the zero line
	Bottom string // y of the axis' end
	HasStd bool
}

// classView is one class's highest importances.
type classView struct {
	Class   string
	Rows    []importanceBar // Feature, Score, Std only
	Omitted int
}

type importanceBar struct {
	Feature, Label  string // Label: cut for the figure
	Score, Std      string
	Y, TextY, MidY  string
	X, Width        string
	WhiskerFrom     string
	WhiskerTo       string
	Negative, HasSD bool
}

// effectChart is one effect curve: its SVG geometry and a table of (a
// sample of) its points.
type effectChart struct {
	ID                     string
	Feature, Method, Label string
	Polyline               string
	Dots                   []svgPoint
	XMin, XMax, YMin, YMax string // axis labels
	Rows                   []effectRow
	Sampled                int // points in the document, when Rows is a sample
}

type svgPoint struct{ X, Y string }

type effectRow struct{ Value, Effect string }

// explanationComparison is the version page's comparison with the
// previous version's explanation.
type explanationComparison struct {
	Previous int // the previous version, 0 when there is none
	Reason   string
	Rows     []changeRow
	Omitted  int
}

type changeRow struct {
	Feature, Method, Score, Previous, Change, Status string
}

// ---- reading ----

// errNoExplanation means the run or version has no explanation.json.
var errNoExplanation = errors.New("no explanation")

// runExplanation is a run's explanation.json (errNoExplanation if it has
// none), read as the explanation route reads a version's
// (readExplanation).
func (s *Server) runExplanation(ctx context.Context, projectID, runID string) (explain.Explanation, error) {
	a, err := s.deps.Queries.RunArtifact(ctx, projectID, runID, explain.FileName)
	if errors.Is(err, projections.ErrNotFound) {
		return explain.Explanation{}, errNoExplanation
	}
	if err != nil {
		return explain.Explanation{}, err
	}
	return s.readExplanation(ctx, a)
}

// ---- the view ----

// explanationFor is the section's view of the outcome of a read: the
// explanation, none, or why the file cannot be shown.
func (s *Server) explanationFor(ctx context.Context, x explain.Explanation, err error) explanationView {
	var bad *explain.Error
	var pe *problemError
	switch {
	case errors.Is(err, errNoExplanation):
		return explanationView{Reason: "No explanation: no " + explain.FileName + " has been uploaded."}
	case errors.As(err, &pe) && pe.code == "no-explanation":
		return explanationView{Reason: "No explanation: " + pe.detail + "."}
	case errors.As(err, &bad):
		return explanationView{Reason: "No valid explanation: " + explain.FileName + " is not a valid explanation (" + bad.Error() + ")."}
	case err != nil:
		s.deps.Logger.WarnContext(ctx, "read an explanation", "request_id", requestID(ctx), "err", err)
		return explanationView{Reason: "The explanation cannot be read right now."}
	}
	return explanationPage(x)
}

// explanationPage lays out a valid explanation.
func explanationPage(x explain.Explanation) explanationView {
	v := explanationView{Found: true, Target: x.Target}
	d := x.Dataset
	v.Dataset = d.Name + ", " + strconv.FormatInt(d.Rows, 10) + " rows"
	if d.Split != "" {
		v.Dataset += ", " + d.Split + " split"
	}
	if d.Digest != "" {
		v.Dataset += ", " + d.Digest
	}
	if d.Description != "" {
		v.Dataset += ": " + d.Description
	}
	if m := x.Metric; m != nil {
		v.Metric = m.Name
		if m.Baseline != nil {
			v.Metric += " = " + shortFloat(*m.Baseline) + " before any feature is disturbed"
		}
		if m.Direction != "" {
			v.Metric += " (" + m.Direction + ")"
		}
	}

	sorted := x.SortedImportances()
	if len(sorted) > uiMaxImportances {
		v.Omitted = len(sorted) - uiMaxImportances
		sorted = sorted[:uiMaxImportances]
	}
	byMethod := map[string][]explain.Importance{}
	var methods []string
	for _, im := range sorted {
		if _, ok := byMethod[im.Method]; !ok {
			methods = append(methods, im.Method)
		}
		byMethod[im.Method] = append(byMethod[im.Method], im)
	}
	for i, m := range methods {
		v.Groups = append(v.Groups, barChart("imp-"+strconv.Itoa(i), m, byMethod[m]))
	}

	effects := x.FeatureEffects
	if len(effects) > uiMaxEffects {
		v.EffOmitted = len(effects) - uiMaxEffects
		effects = effects[:uiMaxEffects]
	}
	for i, e := range effects {
		v.Effects = append(v.Effects, curve("eff-"+strconv.Itoa(i), e))
	}

	classes := x.Classes
	if len(classes) > uiMaxClasses {
		v.ClassOmitted = len(classes) - uiMaxClasses
		classes = classes[:uiMaxClasses]
	}
	for _, c := range classes {
		cv := classView{Class: c.Class}
		list := c.SortedImportances()
		if len(list) > uiMaxClassRows {
			cv.Omitted = len(list) - uiMaxClassRows
			list = list[:uiMaxClassRows]
		}
		for _, im := range list {
			row := importanceBar{Feature: im.Feature + " (" + im.Method + ")", Score: shortFloat(im.Score)}
			if im.Std != nil {
				row.HasSD, row.Std = true, shortFloat(math.Abs(*im.Std))
			}
			cv.Rows = append(cv.Rows, row)
		}
		v.Classes = append(v.Classes, cv)
	}
	return v
}

// comparisonFor is the comparison of an explanation with the previous
// version's, as the explanation route answers it (at most uiMaxChanges
// rows, the largest changes).
func comparisonFor(x ExplanationResponse) *explanationComparison {
	c := &explanationComparison{}
	if x.Previous == nil {
		c.Reason = "No earlier version has an explanation to compare with."
		return c
	}
	c.Previous = x.Previous.Version
	changes := x.Comparison
	if len(changes) > uiMaxChanges {
		c.Omitted = len(changes) - uiMaxChanges
		changes = changes[:uiMaxChanges]
	}
	opt := func(f *float64) string {
		if f == nil {
			return "—"
		}
		return shortFloat(*f)
	}
	for _, ch := range changes {
		delta := shortFloat(ch.Change)
		if ch.Change > 0 {
			delta = "+" + delta
		}
		c.Rows = append(c.Rows, changeRow{Feature: ch.Feature, Method: ch.Method, Score: opt(ch.Score), Previous: opt(ch.Previous),
			Change: delta, Status: ch.Status})
	}
	return c
}

// shortFloat is a score as the UI shows it: four significant digits.
func shortFloat(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }

// svgNum is an SVG coordinate.
func svgNum(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// cut shortens a label for a figure.
func cut(s string) string {
	if utf8.RuneCountInString(s) <= uiLabelRunes {
		return s
	}
	r := []rune(s)
	return string(r[:uiLabelRunes-1]) + "…"
}

// The bar chart's geometry (SVG user units; the CSS scales the figure).
const (
	barLabelEnd = 196.0 // labels end here, bars start after
	barLeft     = 204.0
	barRight    = 560.0
	barTop      = 8.0
	barRow      = 24.0
	barHeight   = 16.0
)

// barChart lays out one method's importances (highest first): a bar from
// zero to the score, a whisker of ± std.
func barChart(id, method string, list []explain.Importance) importanceGroup {
	lo, hi := 0.0, 0.0
	for _, im := range list {
		sd := 0.0
		if im.Std != nil {
			sd = math.Abs(*im.Std)
		}
		lo, hi = math.Min(lo, im.Score-sd), math.Max(hi, im.Score+sd)
	}
	if hi == lo {
		hi = lo + 1
	}
	x := func(v float64) float64 { return barLeft + (v-lo)/(hi-lo)*(barRight-barLeft) }
	g := importanceGroup{ID: id, Method: method, Zero: svgNum(x(0))}
	for i, im := range list {
		y := barTop + float64(i)*barRow
		from, to := x(0), x(im.Score)
		b := importanceBar{Feature: im.Feature, Label: cut(im.Feature), Score: shortFloat(im.Score),
			Y: svgNum(y), TextY: svgNum(y + barHeight - 4), MidY: svgNum(y + barHeight/2),
			X: svgNum(math.Min(from, to)), Width: svgNum(math.Max(math.Abs(to-from), 1)), Negative: im.Score < 0}
		if im.Std != nil {
			sd := math.Abs(*im.Std)
			b.HasSD, b.Std = true, shortFloat(sd)
			b.WhiskerFrom, b.WhiskerTo = svgNum(x(im.Score-sd)), svgNum(x(im.Score+sd))
			g.HasStd = true
		}
		g.Bars = append(g.Bars, b)
	}
	bottom := barTop + float64(len(list))*barRow
	g.Bottom, g.Height = svgNum(bottom), svgNum(bottom+barTop)
	return g
}

// The effect charts' geometry.
const (
	effLeft   = 76.0
	effRight  = 312.0
	effTop    = 10.0
	effBottom = 140.0
)

// curve lays out one effect: numeric values on a linear axis, categories
// evenly spaced in their order.
func curve(id string, e explain.Effect) effectChart {
	c := effectChart{ID: id, Feature: e.Feature, Method: e.Method, Label: cut(e.Feature)}
	pts := e.Points
	if len(pts) == 0 {
		return c
	}
	numeric := true
	for _, p := range pts {
		numeric = numeric && !p.Value.IsText
	}
	xs := make([]float64, len(pts))
	for i, p := range pts {
		xs[i] = float64(i)
		if numeric {
			xs[i] = p.Value.Number
		}
	}
	xlo, xhi := xs[0], xs[0]
	ylo, yhi := pts[0].Effect, pts[0].Effect
	for i, p := range pts {
		xlo, xhi = math.Min(xlo, xs[i]), math.Max(xhi, xs[i])
		ylo, yhi = math.Min(ylo, p.Effect), math.Max(yhi, p.Effect)
	}
	c.XMin, c.XMax = cut(pts[0].Value.String()), cut(pts[len(pts)-1].Value.String())
	if numeric {
		c.XMin, c.XMax = shortFloat(xlo), shortFloat(xhi)
	}
	c.YMin, c.YMax = shortFloat(ylo), shortFloat(yhi)
	if xhi == xlo {
		xlo, xhi = xlo-1, xhi+1
	}
	if yhi == ylo {
		pad := math.Max(math.Abs(ylo)*0.1, 1)
		ylo, yhi = ylo-pad, yhi+pad
	}
	sx := func(v float64) float64 { return effLeft + (v-xlo)/(xhi-xlo)*(effRight-effLeft) }
	sy := func(v float64) float64 { return effBottom - (v-ylo)/(yhi-ylo)*(effBottom-effTop) }
	// Drawn in the order of their values (a curve), at most
	// uiMaxCurvePoints of them, evenly sampled.
	order := make([]int, len(pts))
	for i := range order {
		order[i] = i
	}
	if numeric {
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(xs[a], xs[b]) })
	}
	line := ""
	for _, i := range sample(order, uiMaxCurvePoints) {
		p := svgNum(sx(xs[i])) + "," + svgNum(sy(pts[i].Effect))
		if line != "" {
			line += " "
		}
		line += p
		if len(pts) <= 30 {
			c.Dots = append(c.Dots, svgPoint{svgNum(sx(xs[i])), svgNum(sy(pts[i].Effect))})
		}
	}
	c.Polyline = line
	rows := sample(order, uiMaxEffectRows)
	if len(rows) < len(pts) {
		c.Sampled = len(pts)
	}
	for _, i := range rows {
		c.Rows = append(c.Rows, effectRow{Value: pts[i].Value.String(), Effect: shortFloat(pts[i].Effect)})
	}
	return c
}

// sample is at most n of list, evenly spaced, the first and last kept.
func sample(list []int, n int) []int {
	if len(list) <= n {
		return list
	}
	out := make([]int, 0, n)
	for k := range n {
		out = append(out, list[k*(len(list)-1)/(n-1)])
	}
	return out
}

// versionExplanationView is the version page's section: what GET
// …/versions/{version}/explanation answers (versionExplanation: the
// version's own explanation.json, else its run's, and the change since the
// nearest lower version with one). A deleted version shows none.
func (s *Server) versionExplanationView(ctx context.Context, proj projections.Project, m projections.Model, v VersionResponse) explanationView {
	if v.Deleted {
		return explanationView{Reason: "No explanation: the version is deleted."}
	}
	x, err := s.versionExplanation(ctx, m, v.Version)
	view := s.explanationFor(ctx, x.Explanation, err)
	if !view.Found {
		return view
	}
	view.From, view.Href = "this version", artifactHref(proj.Slug, m.Name, v.Version, explain.FileName)
	if x.Source == "run" {
		view.From, view.Href = "the version's run", "/projects/"+url.PathEscape(proj.Slug)+"/runs/"+x.RunID+"/artifacts/"+explain.FileName
	}
	view.Compare = comparisonFor(x)
	return view
}
