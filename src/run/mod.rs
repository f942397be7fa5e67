//! Running an experiment: texts are read as a stream, tokenized, run through the model a
//! batch at a time, and handed to the analyses' accumulators; activations are dropped as
//! soon as every analysis has seen them, so memory does not grow with the corpus.

pub mod error;
pub mod partial;
mod reads;
pub mod setup;
pub mod shard;
mod splice;

use self::error::PartialError;
use self::reads::Reads;
use self::splice::Resumer;
use crate::analyses::{AnalysisState, TextActivations};
use crate::corpus::TextInput;
use crate::model::capture::HeadCapture;
use crate::model::moe::Routing;
use crate::model::shared_head::SharedHead;
use crate::model::{LoadedModel, ModelError, ModelInfo, Site, TextStates, PRE_FINAL_NORM};
use crate::results::{ModelSummary, Provenance, Results, Settings, TextRecord, SCHEMA_VERSION};
use crate::spec::{Spec, SpecError, TextSource};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec does not fit the model (a layer out of range, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Loading or running the model failed, or a text does not fit it.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The corpus cannot be read.
    #[error(transparent)]
    Corpus(#[from] crate::corpus::CorpusError),
    /// The setup: a second model, or the spec against the models.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    /// The run saw too little data for an analysis.
    #[error("{0}")]
    Data(String),
}

/// A stream of texts.
pub type TextStream = Box<dyn Iterator<Item = Result<TextInput, RunError>>>;

/// The texts of the spec or its corpus, as a stream, and what provenance records of
/// where they came from.
pub fn text_stream(
    source: &TextSource,
) -> Result<(TextStream, crate::corpus::CorpusProvenance), RunError> {
    match source {
        TextSource::Inline(texts) => Ok((
            Box::new(texts.clone().into_iter().map(Ok)),
            Default::default(),
        )),
        TextSource::Corpus(corpus) => {
            let opened = corpus.open(&crate::hub::HfEnv::from_env())?;
            let texts = opened.texts.map(|t| t.map_err(RunError::from));
            Ok((Box::new(texts), opened.provenance))
        }
    }
}

/// Everything of a results.json but its texts and analyses: what every shard of a run
/// shares, and what a merge checks they share.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInfo {
    /// The experiment's name.
    pub name: String,
    /// The report title.
    pub title: String,
    /// Where every input came from.
    pub provenance: Provenance,
    /// Run settings taken from the spec.
    pub settings: Settings,
    /// The model's shape.
    pub model: ModelSummary,
}

/// The texts of a run's range: each by id, token count and digest, and those among the
/// run's first `settings.keep_texts` whole, with their tokens.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextLog {
    /// The texts whose global index is below `settings.keep_texts`, whole.
    pub listed: Vec<TextRecord>,
    /// Every text's id, in order (checked unique across the run when it finishes).
    pub ids: Vec<String>,
    /// Every text's token count.
    pub n_tokens: Vec<usize>,
    /// Every text's [`crate::digest::text_digest`], as 64 hex digits each, run together.
    pub digests: String,
    /// Per label, its texts and their tokens.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, [u64; 2]>,
}

impl TextLog {
    /// Logs one text; `listed` says whether to keep its tokens.
    pub fn push(&mut self, record: TextRecord, listed: bool) {
        let digest = crate::digest::text_digest(&record.id, &record.token_ids);
        self.digests.push_str(&crate::digest::hex(&digest));
        self.ids.push(record.id.clone());
        self.n_tokens.push(record.n_tokens);
        if let Some(label) = &record.label {
            let [texts, tokens] = self.labels.entry(label.clone()).or_default();
            *texts += 1;
            *tokens += record.n_tokens as u64;
        }
        if listed {
            self.listed.push(record);
        }
    }

    /// Texts logged.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no text was logged.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends the log of the texts that follow.
    pub fn append(&mut self, right: TextLog) {
        self.listed.extend(right.listed);
        self.ids.extend(right.ids);
        self.n_tokens.extend(right.n_tokens);
        self.digests.push_str(&right.digests);
        for (label, [texts, tokens]) in right.labels {
            let [a, b] = self.labels.entry(label).or_default();
            *a += texts;
            *b += tokens;
        }
    }

    /// Checks the parts of a log read from a file agree (one count and digest per id,
    /// hex digests, listed texts a prefix of the ids).
    pub fn check(&self) -> Result<(), PartialError> {
        let n = self.ids.len();
        if self.n_tokens.len() != n || self.digests.len() != 64 * n {
            return Err(PartialError::Inconsistent(format!(
                "{n} text ids, {} token counts and {} digest digits (64 a text)",
                self.n_tokens.len(),
                self.digests.len()
            )));
        }
        if !self.digests.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PartialError::Inconsistent(
                "the text digests are not hex".into(),
            ));
        }
        if !self.listed.iter().zip(&self.ids).all(|(t, id)| &t.id == id) {
            return Err(PartialError::Inconsistent(
                "the listed texts are not the first of the ids".into(),
            ));
        }
        Ok(())
    }

    /// The summary results.json keeps of every text.
    fn summary(&self) -> crate::results::CorpusSummary {
        let mut lengths = std::collections::BTreeMap::<u64, u64>::new();
        for &n in &self.n_tokens {
            *lengths.entry(n as u64).or_default() += 1;
        }
        crate::results::CorpusSummary {
            texts: self.len(),
            tokens: self.n_tokens.iter().map(|&n| n as u64).sum(),
            sha256: crate::digest::sha256_hex(self.digests.as_bytes()),
            lengths: lengths.into_iter().map(|(l, c)| [l, c]).collect(),
            labels: self
                .labels
                .iter()
                .map(|(label, &[texts, tokens])| crate::results::ClassCount {
                    label: label.clone(),
                    texts,
                    tokens,
                })
                .collect(),
        }
    }
}

/// The analyses' states after a run over a contiguous range of texts.
#[derive(Debug, Clone)]
pub struct Accumulated {
    /// What the run was.
    pub info: RunInfo,
    /// The texts of the range, in order.
    pub texts: TextLog,
    /// One state per analysis, in spec order.
    pub states: Vec<AnalysisState>,
}

impl Accumulated {
    /// Folds in the run over the texts that follow this one's.
    pub fn merge(&mut self, right: Accumulated) -> Result<(), PartialError> {
        if self.states.len() != right.states.len() {
            return Err(PartialError::Analyses(
                self.states.len(),
                right.states.len(),
            ));
        }
        for (index, (a, b)) in self.states.iter_mut().zip(right.states).enumerate() {
            let kind = a.kind();
            a.merge(b)
                .map_err(|error| PartialError::State { index, kind, error })?;
        }
        self.texts.append(right.texts);
        Ok(())
    }

    /// The results, once every text was seen. Fails when an analysis got too little data
    /// or a text id repeats.
    pub fn finish(self) -> Result<Results, RunError> {
        if self.texts.is_empty() {
            return Err(RunError::Data("the corpus holds no text".into()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for id in &self.texts.ids {
            if !ids.insert(id.as_str()) {
                return Err(duplicate_id(id));
            }
        }
        let analyses = self
            .states
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let kind = s.kind();
                let _t = crate::timings::span(|| format!("analyses[{i}] {kind} finish"));
                s.finish()
                    .map_err(|e| RunError::Data(format!("analyses[{i}] ({kind}): {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let RunInfo {
            name,
            title,
            provenance,
            settings,
            model,
        } = self.info;
        Ok(Results {
            schema_version: SCHEMA_VERSION,
            name,
            title,
            provenance,
            settings,
            model,
            corpus: self.texts.summary(),
            texts: self.texts.listed,
            analyses,
        })
    }
}

/// The vectors at `site` in `needed` of one text, token 0 dropped when `skip` is 1, as
/// row-major `[rows, width]` vectors (`None` where not needed). Hidden states come with
/// `pre_final_norm` after them.
fn activations(
    out: &mut TextStates,
    site: Site,
    needed: &[bool],
    skip: usize,
    rows: usize,
) -> Vec<Option<Vec<f32>>> {
    let all: Vec<Vec<f32>> = match site.slot() {
        None => {
            let mut all = std::mem::take(&mut out.states);
            all.push(std::mem::take(&mut out.pre_final_norm));
            all
        }
        Some(i) => std::mem::take(&mut out.sites[i]),
    };
    let mut taken: Vec<Option<Vec<f32>>> = all
        .into_iter()
        .zip(needed)
        .map(|(mut t, &want)| {
            // [n_tokens, width] -> [n_tokens - skip, width]
            want.then(|| {
                let width = t.len() / rows.max(1);
                t.drain(..(skip * width).min(t.len()));
                t
            })
        })
        .collect();
    taken.resize(needed.len(), None);
    taken
}

/// The `pre_final_norm` row just before the first of `skip` skipped rows, when the
/// hidden states are read with that state: what predicts the first analysed token.
fn previous_row(
    out: &TextStates,
    site: Site,
    needed: &[bool],
    skip: usize,
    rows: usize,
) -> Option<Vec<f32>> {
    let p = &out.pre_final_norm;
    if !site.is_hidden() || skip == 0 || needed.last() != Some(&true) || p.is_empty() {
        return None;
    }
    let width = p.len() / rows.max(1);
    p.get((skip - 1) * width..skip * width).map(<[f32]>::to_vec)
}

/// Refuses a second model whose tokenizer splits `input` differently: the comparison
/// runs both on the first model's ids, which would mean other tokens to it.
fn same_tokens(
    companion: &LoadedModel,
    id: &str,
    input: &TextInput,
    ids: &[u32],
) -> Result<(), RunError> {
    let theirs = companion.encode(&input.id, &input.text)?;
    if theirs == ids {
        return Ok(());
    }
    let at = ids.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
    Err(RunError::Data(format!(
        "the second model `{id}` tokenizes text `{}` differently from the first (token {at}: {} against {}): the analyses that compare two models (agreement, divergence) run both on the first model's token ids, so use a version with the same tokenizer",
        input.id,
        ids.get(at).map_or("end of text".into(), |x| format!("id {x}")),
        theirs.get(at).map_or("end of text".into(), |x| format!("id {x}")),
    )))
}

/// Refuses a text without a label when analysis `labels` (its position and kind) needs
/// every text's: checked as the text is read, before any forward.
fn unlabelled(t: &TextInput, labels: Option<(usize, &'static str)>) -> Result<(), RunError> {
    match (labels, &t.label) {
        (Some((i, kind)), None) => Err(RunError::Data(format!(
            "text `{}` has no label, and analyses[{i}] ({kind}) compares the classes of labelled texts: give every text a label (a `label` field or column, `corpus: {{..., label: COLUMN}}`, or `label:` on an inline text), or leave the unlabelled texts out",
            t.id
        ))),
        _ => Ok(()),
    }
}

fn duplicate_id(id: &str) -> RunError {
    RunError::Data(format!(
        "text id `{id}` appears twice: give every text a unique id"
    ))
}

/// Runs `spec` on a loaded model over every text. `on_text` is called after each text
/// (progress).
pub fn run(
    spec: &Spec,
    model: &LoadedModel,
    on_text: &mut dyn FnMut(&str),
) -> Result<Results, RunError> {
    accumulate(spec, model, None, on_text)?.finish()
}

/// Counts the units of a run (texts, or with `window` their windows), reading the corpus
/// through (a shard needs the count to find its range; a malformed line fails here, in
/// every shard alike). Windows need the tokenizer, texts alone do not.
pub fn count_units(spec: &Spec, model: &LoadedModel) -> Result<usize, RunError> {
    if spec.window.is_none() {
        let mut n = 0;
        for t in text_stream(&spec.texts)?.0 {
            t?;
            n += 1;
        }
        return Ok(n);
    }
    let mut n = 0;
    for u in Units::new(spec, model, &[], (0, None))? {
        u?;
        n += 1;
    }
    Ok(n)
}

/// What the analyses see as one text: a whole text, or one window of it.
struct Unit {
    /// Index in the run's global order of units (the same in every shard).
    index: usize,
    /// The text's id, or `ID#k` for its window `k`.
    id: String,
    /// Token ids, a window's context included.
    ids: Vec<u32>,
    /// Leading tokens an earlier window already analysed.
    context: usize,
    /// The text's label (every window of it has the text's).
    label: Option<String>,
    /// For a window, its text's id.
    window_of: Option<String>,
}

/// The units of a run in global order, from index `start` on. Texts are tokenized one at
/// a time; with `window` each is cut into windows (so skipping to `start` tokenizes the
/// texts before it, to number their windows).
struct Units<'a> {
    texts: TextStream,
    /// Where the texts came from.
    provenance: crate::corpus::CorpusProvenance,
    spec: &'a Spec,
    model: &'a LoadedModel,
    companions: &'a [LoadedModel],
    seen: std::collections::BTreeSet<String>,
    /// The analysis (position, kind) that needs every text's label, if any.
    labels: Option<(usize, &'static str)>,
    pending: std::collections::VecDeque<Unit>,
    next_index: usize,
    start: usize,
}

impl<'a> Units<'a> {
    fn new(
        spec: &'a Spec,
        model: &'a LoadedModel,
        companions: &'a [LoadedModel],
        (start, labels): (usize, Option<(usize, &'static str)>),
    ) -> Result<Self, RunError> {
        let (mut texts, provenance) = text_stream(&spec.texts)?;
        let mut next_index = 0;
        if spec.window.is_none() {
            // A text is one unit: skip without tokenizing.
            for t in texts.by_ref().take(start) {
                t?;
                next_index += 1;
            }
        }
        Ok(Self {
            texts,
            provenance,
            spec,
            model,
            companions,
            seen: Default::default(),
            labels,
            pending: Default::default(),
            next_index,
            start,
        })
    }

    /// Tokenizes the next text into `pending`; false at the end of the texts.
    fn refill(&mut self) -> Result<bool, RunError> {
        let Some(t) = self.texts.next() else {
            return Ok(false);
        };
        let t = t?;
        if !self.seen.insert(t.id.clone()) {
            return Err(duplicate_id(&t.id));
        }
        unlabelled(&t, self.labels)?;
        let tokenize = crate::timings::span(|| "tokenize".into());
        let ids = match self.spec.window {
            None => self.model.encode(&t.id, &t.text)?,
            Some(_) => self.model.tokenize(&t.id, &t.text)?,
        };
        for (c, companion) in self.companions.iter().enumerate() {
            same_tokens(companion, &self.spec.companions[c].id, &t, &ids)?;
        }
        drop(tokenize);
        let Some(window) = self.spec.window else {
            self.push(t.id, ids, 0, (t.label, None));
            return Ok(true);
        };
        for (k, (a, b, context)) in window.cut(ids.len()).into_iter().enumerate() {
            self.push(
                crate::spec::Window::id(&t.id, k),
                ids[a..b].to_vec(),
                context,
                (t.label.clone(), Some(t.id.clone())),
            );
        }
        Ok(true)
    }

    /// Queues a unit: its id, token ids, context, and its text's label and (for a
    /// window) id.
    fn push(
        &mut self,
        id: String,
        ids: Vec<u32>,
        context: usize,
        (label, window_of): (Option<String>, Option<String>),
    ) {
        let index = self.next_index;
        self.next_index += 1;
        if index >= self.start {
            self.pending.push_back(Unit {
                index,
                id,
                ids,
                context,
                label,
                window_of,
            });
        }
    }
}

impl Iterator for Units<'_> {
    type Item = Result<Unit, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Some(Ok(u));
            }
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Runs `spec` over the texts of `range` (global indices; `None`: every text) and returns
/// the analyses' states, not yet finished.
pub fn accumulate(
    spec: &Spec,
    model: &LoadedModel,
    range: Option<std::ops::Range<usize>>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Accumulated, RunError> {
    let info = model.model.info().clone();
    let mut labels = info.labels.clone();
    labels.push(PRE_FINAL_NORM.to_string());
    let setup::Prepared {
        companions,
        selected,
        mut states,
    } = setup::prepare(spec, &info)?;
    let infos: Vec<ModelInfo> = companions.iter().map(|c| c.model.info().clone()).collect();
    let reads = Reads::of(&states, &info, &infos);
    let range = range.unwrap_or(0..usize::MAX);
    let units = Units::new(spec, model, &companions, (range.start, reads.labels))?;
    let corpus = units.provenance.clone();
    let mut batches = Batches {
        units: units.take(range.end.saturating_sub(range.start)),
        held: None,
        spec,
    };
    let pass = Pass {
        spec,
        model,
        companions: &companions,
        reads: &reads,
    };
    let mut records = TextLog::default();
    while let Some(batch) = batches.next_batch()? {
        pass.run(batch, &mut states, &mut records, on_text)?;
    }
    let layers = selected.iter().map(|&l| labels[l].clone()).collect();
    let mut info = run_info(spec, model, &companions, corpus, layers);
    if reads.sites.iter().any(|(s, _)| *s == Site::MlpAct) {
        info.model.intermediate_size = model.model.info().intermediate_size;
    }
    if reads.sites.iter().any(|(s, _)| *s == Site::AttnZ) {
        info.model.attention_width = model.model.info().width(Site::AttnZ);
    }
    Ok(Accumulated {
        info,
        texts: records,
        states,
    })
}

/// Consecutive units, while they fit one forward pass.
struct Batches<'a, I> {
    units: I,
    /// The unit that did not fit the last batch.
    held: Option<Unit>,
    spec: &'a Spec,
}

impl<I: Iterator<Item = Result<Unit, RunError>>> Batches<'_, I> {
    /// The next batch: units while their count stays within `batch_size` and their tokens
    /// within `batch_tokens` (a unit longer than that runs alone). A forward packs its
    /// texts with no padding, so the budget counts the rows it computes. Results do not
    /// depend on where batches end; a bad text fails before its batch.
    fn next_batch(&mut self) -> Result<Option<Vec<Unit>>, RunError> {
        let mut batch: Vec<Unit> = Vec::new();
        let mut tokens = 0;
        while let Some(unit) = match self.held.take() {
            Some(unit) => Some(unit),
            None => self.units.next().transpose()?,
        } {
            let fits = batch.len() < self.spec.batch_size
                && tokens + unit.ids.len() <= self.spec.batch_tokens;
            if !batch.is_empty() && !fits {
                self.held = Some(unit);
                break;
            }
            tokens += unit.ids.len();
            batch.push(unit);
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// One forward pass of a batch through the model (and the second models), handed to
/// the analyses unit by unit.
struct Pass<'a> {
    spec: &'a Spec,
    model: &'a LoadedModel,
    companions: &'a [LoadedModel],
    /// What the analyses read.
    reads: &'a Reads,
}

/// One unit's vectors at one site: its own, and each second model's.
struct SiteRows {
    site: Site,
    width: usize,
    rows: Vec<Option<Vec<f32>>>,
    companions: Vec<Vec<Option<Vec<f32>>>>,
    /// The `pre_final_norm` row before the first analysed one (hidden states only).
    previous: Option<Vec<f32>>,
}

impl Pass<'_> {
    /// Rows a unit leaves out: token 0 when excluded, a window's context.
    fn skip(&self, u: &Unit) -> usize {
        u.context.max(usize::from(self.spec.exclude_first_token))
    }

    fn run(
        &self,
        batch: Vec<Unit>,
        states: &mut [AnalysisState],
        records: &mut TextLog,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(), RunError> {
        let refs: Vec<&[u32]> = batch.iter().map(|u| u.ids.as_slice()).collect();
        let skips: Vec<usize> = batch.iter().map(|u| self.skip(u)).collect();
        let capture = self.reads.capture(&skips);
        let forward = crate::timings::span(|| "forward".into());
        let outputs = self.model.model.forward_with(&refs, &capture)?;
        drop(forward);
        // Each second model on the same token ids, at the sites read of it.
        let mut others: Vec<Vec<TextStates>> = Vec::new();
        for (c, companion) in self.companions.iter().enumerate() {
            let _t = crate::timings::span(|| "forward (second models)".into());
            let capture = self.reads.companion_capture(c);
            others.push(companion.model.forward_with(&refs, &capture)?);
        }
        let mut others: Vec<_> = others.into_iter().map(Vec::into_iter).collect();
        for (unit, mut out) in batch.into_iter().zip(outputs) {
            let mut theirs: Vec<TextStates> =
                others.iter_mut().filter_map(Iterator::next).collect();
            let capturing = crate::timings::span(|| "capture".into());
            let model = self.model.model.as_ref();
            let resumer =
                Resumer::keep(model, &unit.ids, self.skip(&unit), &out, &self.reads.splice);
            let rows = self.site_rows(&unit, &mut out, &mut theirs);
            let tokens = self.model.tokenizer.token_strings(&unit.ids);
            drop(capturing);
            self.observe(
                &unit,
                &tokens,
                &rows,
                (&out.attention, &out.routing),
                resumer.as_ref().map(|r| r as &dyn crate::analyses::Splice),
                states,
            );
            on_text(&unit.id);
            let listed = unit.index < self.spec.keep_texts;
            records.push(
                TextRecord {
                    id: unit.id,
                    n_tokens: unit.ids.len(),
                    token_ids: unit.ids,
                    tokens,
                    label: unit.label,
                },
                listed,
            );
        }
        Ok(())
    }

    /// The unit's vectors at every site the analyses read.
    fn site_rows(
        &self,
        unit: &Unit,
        out: &mut TextStates,
        theirs: &mut [TextStates],
    ) -> Vec<SiteRows> {
        let (skip, n) = (self.skip(unit), unit.ids.len());
        let info = self.model.model.info();
        self.reads
            .sites
            .iter()
            .map(|(site, needed)| SiteRows {
                site: *site,
                width: info.width(*site).unwrap_or(info.hidden_size),
                previous: previous_row(out, *site, needed, skip, n),
                rows: activations(out, *site, needed, skip, n),
                companions: theirs
                    .iter_mut()
                    .zip(&self.reads.companions)
                    .map(|(o, sites)| {
                        let needed = sites.iter().find(|(s, _)| s == site).map(|x| &x.1);
                        activations(o, *site, needed.map_or(&[], Vec::as_slice), skip, n)
                    })
                    .collect(),
            })
            .collect()
    }

    /// Hands the unit to every analysis, at its site.
    fn observe(
        &self,
        unit: &Unit,
        tokens: &[String],
        rows: &[SiteRows],
        (attention, routing): (&[Vec<HeadCapture>], &[Option<Routing>]),
        splice: Option<&dyn crate::analyses::Splice>,
        states: &mut [AnalysisState],
    ) {
        let shared = self
            .model
            .model
            .readout()
            .map(|readout| shared_head(readout, rows, states));
        let lens = shared.as_ref().map(|readout| crate::analyses::Lens {
            readout,
            tokenizer: &self.model.tokenizer,
        });
        let readouts: Vec<Option<&dyn crate::model::Readout>> =
            self.companions.iter().map(|c| c.model.readout()).collect();
        let sites: Vec<(Site, &[Option<Vec<f32>>])> =
            rows.iter().map(|r| (r.site, r.rows.as_slice())).collect();
        for (i, s) in states.iter_mut().enumerate() {
            let _t = crate::timings::span(|| format!("analyses[{i}] {} update", s.kind()));
            let at = rows.iter().find(|r| r.site == s.site);
            let text = TextActivations {
                index: unit.index,
                id: &unit.id,
                label: unit.label.as_deref(),
                window_of: unit.window_of.as_deref(),
                tokens,
                first_token: self.skip(unit),
                dim: at.map_or(0, |r| r.width),
                states: at.map_or(&[], |r| r.rows.as_slice()),
                token_ids: &unit.ids,
                lens,
                previous: at.and_then(|r| r.previous.as_deref()),
                companions: at.map_or(&[], |r| r.companions.as_slice()),
                companion_readouts: &readouts,
                attention,
                routing,
                splice,
                sites: &sites,
            };
            s.state.observe(&text);
        }
    }
}

/// The head every analysis of one text reads logits through: remembering the final hidden
/// state's rows (and the row before them) when two analyses read them, so each row's
/// logits are computed once.
fn shared_head<'a>(
    readout: &'a dyn crate::model::Readout,
    rows: &'a [SiteRows],
    states: &[AnalysisState],
) -> SharedHead<'a> {
    let hidden = rows.iter().find(|r| r.site == Site::Hidden);
    let shared = states.iter().filter(|s| s.state.reads_head()).count() > 1;
    let finals: Vec<&[f32]> = match hidden {
        Some(h) if shared => h
            .previous
            .as_deref()
            .into_iter()
            .chain(h.rows.last().and_then(|r| r.as_deref()))
            .collect(),
        _ => Vec::new(),
    };
    SharedHead::new(readout, &finals, hidden.map_or(1, |h| h.width))
}

/// What the run was: provenance, settings, the model's shape.
fn run_info(
    spec: &Spec,
    model: &LoadedModel,
    companions: &[LoadedModel],
    corpus: crate::corpus::CorpusProvenance,
    layers: Vec<String>,
) -> RunInfo {
    let info = model.model.info();
    RunInfo {
        name: spec.name.clone(),
        title: spec.title.clone(),
        provenance: Provenance {
            model: model.provenance.clone(),
            spec_sha256: spec.sha256.clone(),
            corpus_sha256: corpus.sha256,
            dataset: corpus.dataset,
            strata_version: crate::VERSION.to_string(),
            strata_commit: crate::VERSION_COMMIT.to_string(),
            candle_version: env!("STRATA_CANDLE_VERSION").to_string(),
            dtype: "f32".into(),
            device: "cpu".into(),
            companions: companions
                .iter()
                .map(|c| crate::results::Companion {
                    model: c.provenance.clone(),
                    architecture: c.model.info().architecture.clone(),
                    quantization: c.model.info().quantization.clone(),
                })
                .collect(),
        },
        settings: Settings {
            seed: spec.seed,
            exclude_first_token: spec.exclude_first_token,
            layers,
            batch_size: spec.batch_size,
            batch_tokens: spec.batch_tokens,
            compare: spec.compare,
            keep_texts: spec.keep_texts,
            window: spec.window.map(|w| crate::results::WindowSettings {
                tokens: w.tokens,
                stride: w.stride,
            }),
        },
        model: ModelSummary {
            architecture: info.architecture.clone(),
            quantization: info.quantization.clone(),
            tensor_types: info.tensor_types.clone(),
            n_layers: info.n_layers,
            hidden_size: info.hidden_size,
            intermediate_size: None,
            attention_width: None,
            labels: info.labels.clone(),
            n_experts: info.moe.as_ref().map(|m| m.n_experts),
            top_k: info.moe.as_ref().map(|m| m.top_k),
            sparse_blocks: info.moe.as_ref().map(|m| m.sparse()),
        },
    }
}
